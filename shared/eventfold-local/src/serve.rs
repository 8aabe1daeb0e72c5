//! The HTTP/1 serving the gateway and the emulated runtime API share.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// A response with a body in memory.
pub(crate) type Response = hyper::Response<Full<Bytes>>;

/// A response with `status` and `body`.
pub(crate) fn response(status: u16, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Serves `listener` until accepting fails: a task per connection, each request answered by
/// `handle` (with the peer's address).
pub(crate) async fn serve<F, Fut>(listener: TcpListener, handle: F) -> std::io::Result<()>
where
    F: Fn(hyper::Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    loop {
        let (stream, peer) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let answer = handle(req, peer);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
