//! `/metrics`, `/healthz` and a small `/` page, served until shutdown; over TLS and behind
//! basic auth when `--web.config.file` says so.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;
use crate::telemetry::webconfig::WebConfig;

/// A TLS handshake that has not finished by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the `/` page says about this process; never contains a password.
pub struct Page {
    pub target: String,
    pub run_id: i64,
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn route(req: &Request<Incoming>, metrics: &Metrics, page: &Page) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let (body, content_type) = metrics.encode();
            response(StatusCode::OK, &content_type, body)
        }
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n"),
        "/" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><title>pgdrill</title></head><body>\
                 <h1>pgdrill {}</h1><p>Target: <code>{}</code><br>Run id: {}</p>\
                 <p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p>\
                 </body></html>\n",
                env!("CARGO_PKG_VERSION"),
                escape(&page.target),
                page.run_id
            ),
        ),
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Basic auth when configured; `/healthz` (it says only `ok`) stays open for probes.
async fn handle(
    req: Request<Incoming>,
    metrics: &Metrics,
    page: &Page,
    web: Option<&WebConfig>,
) -> Response<Full<Bytes>> {
    if let Some(web) = web.filter(|w| w.requires_auth() && req.uri().path() != "/healthz") {
        let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if !web.authorized(header).await {
            let mut resp = response(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n");
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"pgdrill\""),
            );
            return resp;
        }
    }
    route(&req, metrics, page)
}

async fn serve_connection<S>(
    io: S,
    metrics: Arc<Metrics>,
    page: Arc<Page>,
    web: Option<Arc<WebConfig>>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let (metrics, page, web) = (metrics.clone(), page.clone(), web.clone());
        async move { Ok::<_, Infallible>(handle(req, &metrics, &page, web.as_deref()).await) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => if let Err(err) = res {
            tracing::debug!(%err, "HTTP connection ended with an error");
        },
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

/// Serves on an already bound listener (bound before load starts, so a bad
/// `--listen` fails fast) until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    page: Arc<Page>,
    web: Option<Arc<WebConfig>>,
    stop: CancellationToken,
) {
    let tls = web
        .as_ref()
        .and_then(|w| w.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "accepting an HTTP connection failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let (metrics, page, web, stop) = (metrics.clone(), page.clone(), web.clone(), stop.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(stream, metrics, page, web, stop).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_connection(tls_stream, metrics, page, web, stop).await,
                Ok(Err(err)) => tracing::debug!(%err, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}
