//! The local API Gateway: HTTP on 127.0.0.1, routing from the template, the JWT authorizer,
//! and the same `lambda_http` request the Lambda runtime would build from the HTTP API's
//! payload format 2.0 event.
//!
//! The gateway's own refusals (no route: 404, no or bad token: 401, a request the event
//! cannot carry: 400) are RFC 9457 `application/problem+json` documents whose `type` is a
//! slug under [`DEFAULT_PROBLEM_BASE`] (or the base given to [`Gateway::with_problem_base`]).

mod event;
mod routes;

use crate::functions::HttpHandler;
use crate::jwt::JwtConfig;
use crate::template::RouteSpec;
use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use routes::Route;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Base of the problem `type` URIs of the gateway's own errors.
pub const DEFAULT_PROBLEM_BASE: &str = "https://eventfold.dev/problems/";

/// API Gateway's payload limit.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// Routes and handlers of the local HTTP API.
pub struct Gateway {
    routes: Vec<Route>,
    handlers: HashMap<String, HttpHandler>,
    auth: JwtConfig,
    problem_base: String,
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
            auth,
            problem_base: DEFAULT_PROBLEM_BASE.to_owned(),
        }
    }

    /// Uses `base` (ending in `/`) for the `type` of the gateway's problem documents.
    pub fn with_problem_base(mut self, base: impl Into<String>) -> Self {
        self.problem_base = base.into();
        self
    }

    /// The JWT check in force.
    pub fn auth(&self) -> &JwtConfig {
        &self.auth
    }

    /// Sends `routes` to `function`'s handler.
    pub fn add_function(&mut self, function: &str, routes: &[RouteSpec], handler: HttpHandler) {
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

    fn problem(
        &self,
        status: u16,
        slug: &str,
        detail: &str,
        path: &str,
    ) -> hyper::Response<Full<Bytes>> {
        let title = match status {
            401 => "Unauthorized",
            404 => "Not found",
            _ => "Bad request",
        };
        let body = json!({
            "type": format!("{}{slug}", self.problem_base),
            "title": title, "status": status, "detail": detail, "instance": path,
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

    /// Handles one HTTP request end to end.
    pub async fn call(
        &self,
        req: hyper::Request<Bytes>,
        peer: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let Some((route, params)) = routes::select(&self.routes, req.method().as_str(), &path)
        else {
            return self.problem(
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
        let claims = match token.map(|t| self.auth.verify(t.trim())) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                return self.problem(
                    401,
                    "unauthorized",
                    &format!("invalid bearer token: {e}"),
                    &path,
                );
            }
            None => return self.problem(401, "unauthorized", "missing bearer token", &path),
        };
        let event = event::api_gateway_v2_event(&req, route, &params, &claims, peer);
        let lambda_req = match lambda_http::request::from_str(&event.to_string()) {
            Ok(r) => r,
            Err(e) => {
                return self.problem(
                    400,
                    "invalid-request",
                    &format!("request not representable: {e}"),
                    &path,
                );
            }
        };
        let Some(handler) = self.handlers.get(&route.function) else {
            return self.problem(404, "not-found", "function not available locally", &path);
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

    async fn send(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, Bytes) {
        let mut b = hyper::Request::builder().uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Bytes::new()).expect("request");
        let resp = gw.call(req, "127.0.0.1:1".parse().expect("addr")).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    #[tokio::test]
    async fn routes_authorizes_and_hands_decoded_parameters_to_the_function() {
        let gw = gateway();
        let token = crate::jwt::issue(crate::jwt::DEV_SECRET, "acme", "alice", "events:read", 60);
        let (status, body) = send(&gw, "/things/a%20b", Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"a b");
        let (status, body) = send(&gw, "/things/x", None).await;
        assert_eq!(status, 401);
        let problem: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            problem["type"],
            "https://eventfold.dev/problems/unauthorized"
        );
        let forged = crate::jwt::issue("other", "acme", "alice", "events:read", 60);
        assert_eq!(send(&gw, "/things/x", Some(&forged)).await.0, 401);
        let (status, body) = send(&gw, "/nothing", Some(&token)).await;
        assert_eq!(status, 404);
        let problem: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(problem["type"], "https://eventfold.dev/problems/not-found");
        let other = gateway().with_problem_base("urn:x:");
        let (_, body) = send(&other, "/nothing", None).await;
        let problem: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(problem["type"], "urn:x:not-found");
    }
}
