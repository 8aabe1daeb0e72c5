//! The local API Gateway: HTTP on 127.0.0.1, JWT check, routing from the template, and the
//! same `lambda_http` request the Lambda runtime would build (payload format 2.0).

use crate::jwt;
use crate::template::RouteSpec;
use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A function's HTTP handler, as the Lambda runtime would call it.
pub type Handler = Arc<
    dyn Fn(
            lambda_http::Request,
        ) -> Pin<Box<dyn Future<Output = lambda_http::Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// API Gateway's payload limit.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

struct Route {
    spec: RouteSpec,
    function: String,
}

/// Routes and handlers of the local HTTP API.
pub struct Gateway {
    routes: Vec<Route>,
    handlers: HashMap<String, Handler>,
    secret: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| format!("{} {} -> {}", r.spec.method, r.spec.path, r.function))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn match_path(template: &str, path: &str) -> Option<Map<String, Value>> {
    let mut params = Map::new();
    let mut want = template.trim_matches('/').split('/');
    let mut have = path.trim_matches('/').split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with("+}") => {
                let rest: Vec<&str> = std::iter::once(h).chain(have.by_ref()).collect();
                params.insert(w[1..w.len() - 2].to_owned(), Value::String(rest.join("/")));
                return want.next().is_none().then_some(params);
            }
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with('}') && !h.is_empty() => {
                params.insert(w[1..w.len() - 1].to_owned(), Value::String(h.to_owned()));
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return None,
        }
    }
}

fn problem(status: u16, slug: &str, detail: &str, path: &str) -> hyper::Response<Full<Bytes>> {
    let body = json!({
        "type": format!("{}{slug}", eventfold_aws::http::PROBLEM_BASE),
        "title": if status == 401 { "Unauthorized" } else { "Not found" },
        "status": status, "detail": detail, "instance": path,
    });
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl Gateway {
    /// An empty gateway checking tokens with `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            routes: Vec::new(),
            handlers: HashMap::new(),
            secret: secret.into(),
        }
    }

    /// Sends `route` to `function`'s handler.
    pub fn add_function(&mut self, function: &str, routes: &[RouteSpec], handler: Handler) {
        for spec in routes {
            self.routes.push(Route {
                spec: spec.clone(),
                function: function.to_owned(),
            });
        }
        self.handlers.insert(function.to_owned(), handler);
    }

    /// The routes served, as `METHOD path -> function`.
    pub fn describe(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|r| format!("{:<6} {} -> {}", r.spec.method, r.spec.path, r.function))
            .collect()
    }

    /// Handles one HTTP request end to end.
    pub async fn call(
        &self,
        req: hyper::Request<Bytes>,
        peer: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let method = req.method().as_str().to_owned();
        let Some((route, params)) = self.routes.iter().find_map(|r| {
            let method_ok = r.spec.method == "ANY" || r.spec.method == method;
            match_path(&r.spec.path, &path)
                .filter(|_| method_ok)
                .map(|p| (r, p))
        }) else {
            return problem(
                404,
                "not-found",
                "no route matches this method and path",
                &path,
            );
        };
        // The JWT authorizer runs before the function, as in API Gateway.
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let claims = match token.map(|t| jwt::verify(&self.secret, t.trim())) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                return problem(
                    401,
                    "unauthorized",
                    &format!("invalid bearer token: {e}"),
                    &path,
                );
            }
            None => return problem(401, "unauthorized", "missing bearer token", &path),
        };
        let event = api_gateway_v2_event(&req, &route.spec, params, &claims, peer);
        let lambda_req = match lambda_http::request::from_str(&event.to_string()) {
            Ok(r) => r,
            Err(e) => {
                return problem(
                    400,
                    "invalid-request",
                    &format!("request not representable: {e}"),
                    &path,
                );
            }
        };
        let Some(handler) = self.handlers.get(&route.function) else {
            return problem(404, "not-found", "function not available locally", &path);
        };
        let resp = handler(lambda_req).await;
        let (parts, body) = resp.into_parts();
        let bytes = match body {
            Body::Empty => Bytes::new(),
            Body::Text(t) => Bytes::from(t),
            Body::Binary(b) => Bytes::from(b),
            _ => Bytes::new(),
        };
        hyper::Response::from_parts(parts, Full::new(bytes))
    }
}

/// The API Gateway HTTP API (payload 2.0) event for `req`, as Lambda would receive it.
fn api_gateway_v2_event(
    req: &hyper::Request<Bytes>,
    route: &RouteSpec,
    params: Map<String, Value>,
    claims: &HashMap<String, String>,
    peer: SocketAddr,
) -> Value {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|e| {
                if let Value::String(s) = e {
                    s.push(',');
                    s.push_str(&v);
                }
            })
            .or_insert(Value::String(v));
    }
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let mut query = Map::new();
    for (k, v) in url_pairs(&raw_query) {
        query
            .entry(k)
            .and_modify(|e| {
                if let Value::String(s) = e {
                    s.push(',');
                    s.push_str(&v);
                }
            })
            .or_insert(Value::String(v));
    }
    let body = req.body();
    let (body, b64) = match std::str::from_utf8(body) {
        Ok(t) => (t.to_owned(), false),
        Err(_) => (STANDARD.encode(body), true),
    };
    let now = chrono::Utc::now();
    let route_key = format!("{} {}", route.method, route.path);
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": req.uri().path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "pathParameters": if params.is_empty() { Value::Null } else { Value::Object(params) },
        "requestContext": {
            "accountId": crate::template::LOCAL_ACCOUNT,
            "apiId": "local",
            "authorizer": {"jwt": {"claims": claims, "scopes": null}},
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::now_v7().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": if body.is_empty() { Value::Null } else { Value::String(body) },
        "isBase64Encoded": b64,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Serves `gateway` on `listener` until the task is dropped.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) -> Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let gw = gateway.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let gw = gw.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let resp = match Limited::new(body, MAX_PAYLOAD).collect().await {
                        Ok(collected) => {
                            gw.call(
                                hyper::Request::from_parts(parts, collected.to_bytes()),
                                peer,
                            )
                            .await
                        }
                        Err(_) => {
                            let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                                b"{\"message\":\"Request Entity Too Large\"}",
                            )));
                            *r.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
                            r
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_templates_and_capture_parameters() {
        let p = match_path("/a/{t}/{id}/events", "/a/Order/o-1/events").expect("matches");
        assert_eq!(p["t"], "Order");
        assert_eq!(p["id"], "o-1");
        assert!(match_path("/a/{t}/{id}", "/a/Order/o-1/events").is_none());
        assert!(match_path("/a/{t}", "/a//").is_none());
        let greedy = match_path("/p/{proxy+}", "/p/x/y").expect("greedy");
        assert_eq!(greedy["proxy"], "x/y");
        assert_eq!(
            url_pairs("a=1&b=x%20y&c=%zz+q"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "%zz q".into()),
            ]
        );
    }
}
