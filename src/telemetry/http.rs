//! `/metrics`, `/healthz` and a small `/` page, served until shutdown.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;

/// The live `/` page, drawn by the caller's renderer (never contains a password).
pub struct Page {
    pub render: Box<dyn Fn() -> String + Send + Sync>,
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
        "/" => response(StatusCode::OK, "text/html; charset=utf-8", (page.render)()),
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serves on an already bound listener (bound before load starts, so a bad
/// `--listen` fails fast) until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    page: Arc<Page>,
    stop: CancellationToken,
) {
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
        let metrics = metrics.clone();
        let page = page.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = route(&req, &metrics, &page);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => if let Err(err) = res {
                    tracing::debug!(%err, "HTTP connection ended with an error");
                },
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
