//! A cancel request sent as libpq sends it: on a connection of its own to the server (or
//! pooler) the query's connection went to, then waiting until the other side closes it.
//! tokio-postgres closes at once, and PgBouncer 1.18 (Debian 12's) drops a request whose
//! client is gone before it has passed the request on: through it, no cancel would arrive.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Config};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::either::Either;

use super::Endpoint;

/// Asks the server at `endpoint` (reached with `config`, as the query's connection was) to
/// cancel what `token`'s connection runs.
pub fn cancel(
    token: CancelToken,
    endpoint: &Endpoint,
    config: &Config,
    tls: &MakeRustlsConnect,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        _ => String::new(),
    };
    let (endpoint, mut tls) = (endpoint.clone(), tls.clone());
    async move {
        let stream = match endpoint {
            Endpoint::Tcp(addr) => Either::Left(TcpStream::connect(addr).await?),
            Endpoint::Unix(dir, port) => {
                Either::Right(UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?)
            }
        };
        type Stream = WaitForClose<Either<TcpStream, UnixStream>>;
        let tls = MakeTlsConnect::<Stream>::make_tls_connect(&mut tls, &host)
            .map_err(io::Error::other)?;
        token
            .cancel_query_raw(WaitForClose(stream), tls)
            .await
            .map_err(io::Error::other)
    }
}

/// A stream whose shutdown waits for the other side to close (what it sends is dropped).
struct WaitForClose<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for WaitForClose<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WaitForClose<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = &mut self.get_mut().0;
        let mut scratch = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Pin::new(&mut *stream).poll_shutdown(cx);
            }
        }
    }
}
