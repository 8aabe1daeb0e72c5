//! The HTTP/1 serving the gateway and the emulated runtime API share.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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

/// Headers of one hop that a relay does not pass on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
];

/// A client a relay forwards with (pooled connections).
pub(crate) type RelayClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A pooled HTTP/1 client for [`relay`].
pub(crate) fn relay_client() -> RelayClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends the request (`parts`, `body`) on to `upstream` (`http://host:port`) and answers
/// with what it answers; `who` names the relay in a 502 when the upstream fails.
pub(crate) async fn relay(
    client: &RelayClient,
    upstream: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
    who: &str,
) -> Response {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("{upstream}{path}");
    let mut builder = hyper::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let request = match builder.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return response(502, format!("{who}: {e}")),
    };
    let answer = match client.request(request).await {
        Ok(a) => a,
        Err(e) => return response(502, format!("{who}: the emulator did not answer: {e}")),
    };
    let (parts, body) = answer.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return response(502, format!("{who}: reading the emulator's answer: {e}")),
    };
    let mut out = response(parts.status.as_u16(), body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}
