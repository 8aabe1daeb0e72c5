//! The local API Gateway: HTTP on 127.0.0.1, routing from the template, the JWT authorizer,
//! and the same `lambda_http` request the Lambda runtime would build from the HTTP API's
//! payload format 2.0 event.
//!
//! The gateway's own refusals are what API Gateway itself answers before any function runs,
//! so local tests assert what production does: `{"message":"Not Found"}` (404) for a method
//! and path no route matches, `{"message":"Unauthorized"}` (401, with `WWW-Authenticate`)
//! from the JWT authorizer, `{"message":"Request Entity Too Large"}` (413) past the HTTP
//! API's 10 MB payload, `{"message":"Bad Request"}` (400) for a request the event cannot
//! carry. Problem documents (`application/problem+json`) are the functions' answers only.
//!
//! A function registered with one payload handler ([`crate::Functions::payload`]) gets the
//! payload 2.0 event itself and answers with the payload 2.0 response, read as API Gateway
//! reads it; its failure is API Gateway's
//! `{"message":"Internal Server Error"}` (500).
//!
//! Lambda's 6 MB payloads, the function's `Timeout` and the HTTP API's 30 s integration
//! timeout hold as in AWS, with API Gateway's answers ([`limits`]).

mod event;
pub mod limits;
mod routes;

use crate::functions::RouteHandler;
use crate::jwt::JwtConfig;
use crate::serve::{Response, response};
use crate::template::RouteSpec;
use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lambda_http::Body;
use routes::Route;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// API Gateway's payload limit.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// Routes and handlers of the local HTTP API.
pub struct Gateway {
    routes: Vec<Route>,
    handlers: HashMap<String, RouteHandler>,
    timeouts: HashMap<String, Duration>,
    integration_timeout: Duration,
    auth: JwtConfig,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.describe())
            .field("auth", &self.auth)
            .finish()
    }
}

impl Gateway {
    /// An empty gateway checking tokens with `auth`.
    pub fn new(auth: JwtConfig) -> Self {
        Self {
            routes: Vec::new(),
            handlers: HashMap::new(),
            timeouts: HashMap::new(),
            integration_timeout: limits::INTEGRATION_TIMEOUT,
            auth,
        }
    }

    /// Stops `function` at `timeout` (its template `Timeout`), as Lambda does; a function
    /// not given one gets Lambda's default ([`limits::DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, function: &str, timeout: Duration) {
        self.timeouts.insert(function.to_owned(), timeout);
    }

    fn timeout(&self, function: &str) -> Duration {
        self.timeouts
            .get(function)
            .copied()
            .unwrap_or(limits::DEFAULT_TIMEOUT)
    }

    /// The JWT check in force.
    pub fn auth(&self) -> &JwtConfig {
        &self.auth
    }

    /// Sends `routes` to `function`'s handler.
    pub fn add_function(
        &mut self,
        function: &str,
        routes: &[RouteSpec],
        handler: impl Into<RouteHandler>,
    ) {
        for spec in routes {
            self.routes.push(Route {
                spec: spec.clone(),
                function: function.to_owned(),
            });
        }
        self.handlers.insert(function.to_owned(), handler.into());
    }

    /// The routes served, as `METHOD path -> function`.
    pub fn describe(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|r| format!("{:<6} {} -> {}", r.spec.method, r.spec.path, r.function))
            .collect()
    }

    /// Handles one HTTP request end to end.
    pub async fn call(&self, req: hyper::Request<Bytes>, peer: SocketAddr) -> Response {
        let path = req.uri().path().to_owned();
        // An unrouted method is a 404 too: API Gateway has no 405.
        let Some((route, params)) = routes::select(&self.routes, req.method().as_str(), &path)
        else {
            return gateway_answer(404, "Not Found");
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
        let claims = match token.map(|t| self.auth.verify(t.trim())) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::debug!(path = %path, error = %e, "bearer token refused");
                return unauthorized("Bearer error=\"invalid_token\"");
            }
            None => return unauthorized("Bearer"),
        };
        let event = event::api_gateway_v2_event(&req, route, &params, &claims, peer);
        let payload = event.to_string();
        let function = route.function.as_str();
        // Lambda refuses the invocation (RequestEntityTooLargeException): an integration
        // failure to API Gateway.
        if payload.len() > limits::MAX_REQUEST {
            tracing::warn!(
                function,
                size = payload.len(),
                "the event passes Lambda's request payload limit"
            );
            return gateway_answer(500, "Internal Server Error");
        }
        let lambda_req = match lambda_http::request::from_str(&payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(path = %path, error = %e, "request not representable as an event");
                return gateway_answer(400, "Bad Request");
            }
        };
        // API Gateway's answer when its integration cannot be invoked.
        let Some(handler) = self.handlers.get(function) else {
            return gateway_answer(500, "Internal Server Error");
        };
        let (timeout, integration) = (self.timeout(function), self.integration_timeout);
        let answer = match handler {
            RouteHandler::Payload(handler) => {
                settle(limits::invoke(handler(event), timeout, integration).await)
                    .and_then(|answer| answer.map_err(|e| Failure::Error(e.to_string())))
                    .map(|answer| (answer.to_string().len(), Answer::Payload(answer)))
            }
            RouteHandler::Http(handler) => settle(
                limits::invoke(handler(lambda_req), timeout, integration).await,
            )
            .map(|resp| {
                let (parts, body) = resp.into_parts();
                let size = limits::http_response_size(&parts, &body);
                (size, Answer::Http(parts, body))
            }),
        };
        let answer = match answer {
            Ok((size, _)) if size > limits::MAX_RESPONSE => Err(Failure::Error(format!(
                "Function.ResponseSizeTooLarge: Response payload size exceeded maximum allowed payload size ({} bytes).",
                limits::MAX_RESPONSE
            ))),
            Ok((_, answer)) => Ok(answer),
            Err(failure) => Err(failure),
        };
        match answer {
            Ok(Answer::Payload(answer)) => payload_response(&answer),
            Ok(Answer::Http(parts, body)) => {
                let bytes = match body {
                    Body::Empty => Bytes::new(),
                    Body::Text(t) => Bytes::from(t),
                    Body::Binary(b) => Bytes::from(b),
                    _ => Bytes::new(),
                };
                hyper::Response::from_parts(parts, Full::new(bytes))
            }
            Err(Failure::IntegrationTimedOut) => {
                tracing::warn!(function, ?integration, "the integration timed out");
                gateway_answer(503, "Service Unavailable")
            }
            Err(Failure::Error(error)) => {
                tracing::warn!(function, %error, "the function failed");
                gateway_answer(500, "Internal Server Error")
            }
        }
    }
}

/// A function's answer, before its size is checked.
enum Answer {
    Payload(serde_json::Value),
    Http(lambda_http::http::response::Parts, Body),
}

/// Why a function gave API Gateway no answer.
enum Failure {
    /// A function error (its own, a crash, its timeout, its response too large): 500.
    Error(String),
    /// The integration timed out first: 503.
    IntegrationTimedOut,
}

/// The function's answer, or why there is none.
fn settle<T>(invoked: limits::Invoked<T>) -> Result<T, Failure> {
    match invoked {
        limits::Invoked::Answered(answer) => Ok(answer),
        limits::Invoked::IntegrationTimedOut => Err(Failure::IntegrationTimedOut),
        limits::Invoked::FunctionTimedOut(t) => Err(Failure::Error(format!(
            "Task timed out after {:.2} seconds",
            t.as_secs_f64()
        ))),
        limits::Invoked::Crashed => Err(Failure::Error("the function crashed".to_owned())),
    }
}

/// The HTTP response of a function's payload 2.0 answer, as API Gateway reads it: an object
/// with a `statusCode` gives the status, `headers` (one value each; a comma-joined value stays
/// one), `cookies` (as `set-cookie` headers) and `body` (base64 when `isBase64Encoded`); any
/// other answer is a 200 `application/json` body of the answer itself. An answer it cannot
/// read (a bad status, header or base64) is its 500.
pub(crate) fn payload_response(answer: &serde_json::Value) -> hyper::Response<Full<Bytes>> {
    use base64::Engine as _;
    use hyper::header::{HeaderName, HeaderValue};
    let Some(status) = answer.get("statusCode") else {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    };
    let read = || -> Option<hyper::Response<Full<Bytes>>> {
        let status = hyper::StatusCode::from_u16(u16::try_from(status.as_u64()?).ok()?).ok()?;
        let body = match answer.get("body").and_then(serde_json::Value::as_str) {
            None => Bytes::new(),
            Some(b) if answer["isBase64Encoded"] == true => {
                Bytes::from(base64::engine::general_purpose::STANDARD.decode(b).ok()?)
            }
            Some(b) => Bytes::from(b.to_owned()),
        };
        let mut resp = hyper::Response::new(Full::new(body));
        *resp.status_mut() = status;
        if let Some(headers) = answer.get("headers").and_then(serde_json::Value::as_object) {
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                let value = HeaderValue::from_str(value.as_str()?).ok()?;
                resp.headers_mut().insert(name, value);
            }
        }
        for cookie in answer["cookies"].as_array().into_iter().flatten() {
            let cookie = HeaderValue::from_str(cookie.as_str()?).ok()?;
            resp.headers_mut().append(hyper::header::SET_COOKIE, cookie);
        }
        Some(resp)
    };
    read().unwrap_or_else(|| {
        tracing::warn!(%answer, "a function's HTTP answer API Gateway cannot read");
        gateway_answer(500, "Internal Server Error")
    })
}

/// An answer of API Gateway itself (not of a function): `{"message": ..}` as
/// `application/json`, as the HTTP API writes it.
fn gateway_answer(status: u16, message: &str) -> Response {
    let mut resp = response(status, json!({ "message": message }).to_string());
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The JWT authorizer's refusal, with the `WWW-Authenticate` challenge it sends.
fn unauthorized(challenge: &'static str) -> Response {
    let mut resp = gateway_answer(401, "Unauthorized");
    resp.headers_mut().insert(
        "www-authenticate",
        hyper::header::HeaderValue::from_static(challenge),
    );
    resp
}

/// Most of an oversized body read (and dropped) before the 413 goes out: answering while
/// the client still writes closes the connection under it (a broken pipe, no answer).
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The body when it fits in [`MAX_PAYLOAD`]; `None` past it, after reading the rest (up to
/// [`DRAIN_LIMIT`]) so the client gets the 413 as API Gateway sends it.
async fn read_limited(mut body: hyper::body::Incoming) -> Option<bytes::Bytes> {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return None };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read > DRAIN_LIMIT {
            return None;
        }
        if read <= MAX_PAYLOAD {
            kept.extend_from_slice(&data);
        }
    }
    (read <= MAX_PAYLOAD).then(|| kept.into())
}

/// Serves `gateway` on `listener` until the task is dropped.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) -> Result<()> {
    crate::serve::serve(listener, move |req, peer| {
        let gw = gateway.clone();
        async move {
            let (parts, body) = req.into_parts();
            match read_limited(body).await {
                Some(bytes) => {
                    let req = hyper::Request::from_parts(parts, bytes);
                    gw.call(req, peer).await
                }
                None => gateway_answer(413, "Request Entity Too Large"),
            }
        }
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::http_handler;
    use serde_json::Value;

    fn gateway() -> Gateway {
        let mut gw = Gateway::new(JwtConfig::dev());
        let echo = http_handler(|req: lambda_http::Request| async move {
            use lambda_http::RequestExt;
            let id = req
                .path_parameters_ref()
                .and_then(|p| p.first("id"))
                .unwrap_or("")
                .to_owned();
            lambda_http::Response::new(Body::Text(id))
        });
        gw.add_function(
            "Echo",
            &[RouteSpec {
                method: "GET".into(),
                path: "/things/{id}".into(),
            }],
            echo,
        );
        gw
    }

    async fn send_method(
        gw: &Gateway,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> hyper::Response<Full<Bytes>> {
        let mut b = hyper::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Bytes::new()).expect("request");
        gw.call(req, "127.0.0.1:1".parse().expect("addr")).await
    }

    async fn send(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, Bytes) {
        let resp = send_method(gw, "GET", path, token).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    /// The status, `content-type`, `www-authenticate` and JSON body of an answer.
    async fn answer(resp: hyper::Response<Full<Bytes>>) -> (u16, String, String, Value) {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (content_type, challenge) = (header("content-type"), header("www-authenticate"));
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&body).expect("json");
        (status, content_type, challenge, json)
    }

    #[tokio::test]
    async fn routes_authorizes_and_hands_decoded_parameters_to_the_function() {
        let gw = gateway();
        let token = crate::jwt::issue(crate::jwt::DEV_SECRET, "acme", "alice", "events:read", 60);
        let (status, body) = send(&gw, "/things/a%20b", Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"a b");
        let forged = crate::jwt::issue("other", "acme", "alice", "events:read", 60);
        assert_eq!(send(&gw, "/things/x", Some(&forged)).await.0, 401);
    }

    /// What API Gateway answers by itself, before any function runs: its own JSON, never a
    /// function's problem document.
    #[tokio::test]
    async fn the_gateways_own_refusals_are_api_gateways() {
        let gw = gateway();
        let token = crate::jwt::issue(crate::jwt::DEV_SECRET, "acme", "alice", "events:read", 60);
        let unauthorized = json!({"message": "Unauthorized"});
        let missing = answer(send_method(&gw, "GET", "/things/x", None).await).await;
        assert_eq!(
            missing,
            (
                401,
                "application/json".into(),
                "Bearer".into(),
                unauthorized.clone()
            )
        );
        let forged = crate::jwt::issue("other", "acme", "alice", "events:read", 60);
        let invalid = answer(send_method(&gw, "GET", "/things/x", Some(&forged)).await).await;
        assert_eq!(
            invalid,
            (
                401,
                "application/json".into(),
                "Bearer error=\"invalid_token\"".into(),
                unauthorized
            )
        );
        let not_found = json!({"message": "Not Found"});
        for (method, path, token) in [
            ("GET", "/nothing", Some(token.as_str())),
            ("GET", "/nothing", None),
            // An unrouted method on a routed path: 404, as API Gateway has no 405.
            ("DELETE", "/things/x", Some(token.as_str())),
            ("POST", "/things/x", None),
        ] {
            let (status, content_type, _, body) =
                answer(send_method(&gw, method, path, token).await).await;
            assert_eq!((status, &body), (404, &not_found), "{method} {path}");
            assert_eq!(content_type, "application/json");
        }
    }

    /// A payload handler answering with what `?answer=` names: a payload 2.0 response echoing
    /// the event's route key and path parameter, a bare JSON value, or a failure.
    fn payload_gateway() -> Gateway {
        let mut gw = Gateway::new(JwtConfig::dev());
        let handler = crate::esm::event_handler(|event: Value| async move {
            match event["queryStringParameters"]["answer"].as_str() {
                Some("bare") => Ok(json!({"bare": true})),
                Some("fail") => Err("boom".to_owned()),
                Some("binary") => Ok(json!({
                    "statusCode": 200,
                    "body": "AAE=",
                    "isBase64Encoded": true,
                })),
                _ => Ok(json!({
                    "statusCode": 201,
                    "headers": {"content-type": "text/plain", "x-route": event["routeKey"]},
                    "cookies": ["a=1", "b=2"],
                    "body": event["pathParameters"]["id"],
                    "isBase64Encoded": false,
                })),
            }
        });
        gw.add_function(
            "Raw",
            &[RouteSpec {
                method: "GET".into(),
                path: "/raw/{id}".into(),
            }],
            RouteHandler::Payload(handler),
        );
        gw
    }

    #[tokio::test]
    async fn a_payload_handler_gets_the_event_and_answers_as_api_gateway_reads_it() {
        let gw = payload_gateway();
        let token = crate::jwt::issue(crate::jwt::DEV_SECRET, "acme", "alice", "events:read", 60);
        let resp = send_method(&gw, "GET", "/raw/a%20b", Some(&token)).await;
        assert_eq!(resp.status().as_u16(), 201);
        let header = |name: &str| -> Vec<String> {
            resp.headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("text").to_owned())
                .collect()
        };
        assert_eq!(header("content-type"), ["text/plain"]);
        assert_eq!(header("x-route"), ["GET /raw/{id}"]);
        assert_eq!(header("set-cookie"), ["a=1", "b=2"]);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"a b");

        let bare = send_method(&gw, "GET", "/raw/x?answer=bare", Some(&token)).await;
        assert_eq!(
            answer(bare).await,
            (
                200,
                "application/json".into(),
                String::new(),
                json!({"bare": true})
            )
        );
        let (status, body) = send(&gw, "/raw/x?answer=binary", Some(&token)).await;
        assert_eq!((status, &body[..]), (200, &[0u8, 1][..]));
        let failed = send_method(&gw, "GET", "/raw/x?answer=fail", Some(&token)).await;
        assert_eq!(
            answer(failed).await,
            (
                500,
                "application/json".into(),
                String::new(),
                json!({"message": "Internal Server Error"})
            )
        );
        // The authorizer still runs first.
        assert_eq!(send(&gw, "/raw/x", None).await.0, 401);
    }

    #[tokio::test]
    async fn a_body_over_the_payload_limit_is_api_gateways_413() {
        let mut gw = Gateway::new(JwtConfig::dev());
        let echo = http_handler(|_req: lambda_http::Request| async move {
            lambda_http::Response::new(Body::Text("ran".into()))
        });
        gw.add_function(
            "Echo",
            &[RouteSpec {
                method: "POST".into(),
                path: "/things".into(),
            }],
            echo,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(Arc::new(gw), listener));
        let token = crate::jwt::issue(crate::jwt::DEV_SECRET, "acme", "alice", "events:write", 60);
        let http = crate::httpc::Http::new(&format!("http://{addr}"));
        let big = Value::String("x".repeat(MAX_PAYLOAD));
        let reply = http
            .post("/things", Some(&token), &big)
            .await
            .expect("post");
        assert_eq!(reply.status, 413);
        assert_eq!(reply.json, json!({"message": "Request Entity Too Large"}));
        let small = http
            .post("/things", Some(&token), &json!("x"))
            .await
            .expect("post");
        assert_eq!(small.status, 200);
        server.abort();
    }
}
