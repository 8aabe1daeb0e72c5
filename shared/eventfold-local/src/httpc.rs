//! A small HTTP/1.1 client for the demo, the bench and the tests: real requests over TCP.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A response as the tests look at it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `content-type` header.
    pub content_type: String,
    /// Body parsed as JSON (`Null` when empty or not JSON).
    pub json: Value,
    /// Raw body.
    pub body: Bytes,
    /// Response headers by lower-case name (repeated ones joined with `, `).
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Reply {
    /// The header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Keep-alive HTTP client bound to a base URL.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    /// A client for `base` (e.g. `http://127.0.0.1:3000`).
    pub fn new(base: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Sends `method path` with an optional bearer token and raw body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply> {
        self.send_with(method, path, token, &[], body).await
    }

    /// [`Self::send`] with extra request headers.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut headers = std::collections::BTreeMap::<String, String>::new();
        for (name, value) in resp.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let body = resp.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            content_type,
            json,
            body,
            headers,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.send("GET", path, token, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Reply> {
        self.send("POST", path, token, Some(serde_json::to_vec(body)?))
            .await
    }
}
