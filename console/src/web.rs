//! The console's HTTP server: hyper (already in the workspace for the local gateway), one
//! task per connection, a match on method and path, HTML from the private `pages` module.
//!
//! Writes are POST forms carrying the process's CSRF token; without `--allow-writes` they
//! are refused with `403` and an RFC 9457 problem (`writes-disabled`) whatever they carry.

use crate::Console;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A response with its body in memory.
pub type Resp = hyper::Response<Full<Bytes>>;

/// Prefix of every problem `type` (the same as the HTTP API's).
pub const PROBLEM_BASE: &str = "https://eventfold.dev/problems/";

/// Largest form body taken (a bulk action over a few thousand letters).
const MAX_FORM: usize = 256 * 1024;

/// An RFC 9457 problem: a request refused, with a stable `type` slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Stable slug (`writes-disabled`, `csrf`, `invalid-request`, `not-found`, ...).
    pub slug: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl Problem {
    /// A problem with `status`, `slug`, `detail`.
    pub fn new(status: u16, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
        }
    }

    /// `400 invalid-request`.
    pub fn bad(detail: impl Into<String>) -> Self {
        Self::new(400, "invalid-request", detail)
    }

    /// `404 not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "not-found", detail)
    }

    /// The `application/problem+json` response.
    pub fn response(&self, instance: &str) -> Resp {
        let body = serde_json::json!({
            "type": format!("{PROBLEM_BASE}{}", self.slug),
            "title": self.slug.replace('-', " "),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        });
        respond(
            self.status,
            "application/problem+json",
            body.to_string().into_bytes(),
        )
    }
}

/// A response with `status`, `content_type` and `body`.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    // Nothing is loaded from elsewhere, and no other site may frame the console.
    if let Ok(v) = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'".parse() {
        h.insert(hyper::header::CONTENT_SECURITY_POLICY, v);
    }
    if let Ok(v) = "no-store".parse() {
        h.insert(hyper::header::CACHE_CONTROL, v);
    }
    r
}

/// A `303 See Other` to `to`.
pub fn redirect(to: &str) -> Resp {
    let mut r = respond(303, "text/plain", Bytes::new());
    if let Ok(v) = to.parse() {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

/// Query or form parameters, in order (a key may repeat: bulk selections).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text.
    pub fn parse(text: &str) -> Self {
        Self(
            form_urlencoded::parse(text.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// Every non-empty value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
            .collect()
    }
}

/// Serves `listener` until accepting fails.
pub async fn serve(listener: TcpListener, console: Arc<Console>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let console = console.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(handle(&console, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Answers one request.
pub async fn handle(console: &Console, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = Params::parse(parts.uri.query().unwrap_or(""));
    let html = |markup: Result<maud::Markup, Problem>| match markup {
        Ok(m) => respond(200, "text/html; charset=utf-8", m.into_string()),
        Err(p) => p.response(&path),
    };
    use crate::pages::{dlq, overview, projections, sagas, streams, topics, trace};
    if let Some(action) = projections::Action::from_path(&path)
        && parts.method == Method::POST
    {
        let form = match read_form(body).await {
            Ok(f) => f,
            Err(p) => return p.response(&path),
        };
        return match projections::act(console, action, &form).await {
            Ok(to) => redirect(&to),
            Err(p) => p.response(&path),
        };
    }
    match (&parts.method, path.as_str()) {
        (&Method::GET, "/" | "/overview") => html(Ok(overview::page(console).await)),
        (&Method::GET, "/projections") => html(Ok(projections::page(console, &query).await)),
        (&Method::GET, "/projections/progress") => respond(
            200,
            "application/json",
            projections::progress(console).to_string(),
        ),
        (&Method::GET, "/streams") => html(Ok(streams::list(console, &query).await)),
        (&Method::GET, "/streams/view") => html(streams::view(console, &query).await),
        (&Method::GET, "/trace") => html(Ok(trace::page(console, &query).await)),
        (&Method::GET, "/sagas") => html(Ok(sagas::list(console).await)),
        (&Method::GET, "/sagas/view") => html(sagas::view(console, &query).await),
        (&Method::GET, "/dead-letters") => html(Ok(dlq::list(console, &query).await)),
        (&Method::GET, "/dead-letters/view") => html(dlq::view(console, &query).await),
        (&Method::GET, "/topics") => html(topics::page(console).await),
        (&Method::POST, "/dead-letters/redrive" | "/dead-letters/discard") => {
            let form = match read_form(body).await {
                Ok(f) => f,
                Err(p) => return p.response(&path),
            };
            let action = if path.ends_with("redrive") {
                dlq::Action::Redrive
            } else {
                dlq::Action::Discard
            };
            match dlq::act(console, action, &form).await {
                Ok(to) => redirect(&to),
                Err(p) => p.response(&path),
            }
        }
        (&Method::GET, "/assets/console.css") => asset("text/css", crate::pages::CSS),
        (&Method::GET, "/assets/console.js") => asset("text/javascript", crate::pages::JS),
        (&Method::GET, "/healthz") => respond(200, "text/plain", "ok"),
        (_, p)
            if p == "/dead-letters/redrive"
                || p == "/dead-letters/discard"
                || projections::Action::from_path(p).is_some() =>
        {
            Problem::new(405, "method-not-allowed", "POST a form").response(&path)
        }
        _ => Problem::not_found(format!("no page {path}")).response(&path),
    }
}

fn asset(content_type: &str, text: &'static str) -> Resp {
    respond(200, content_type, text)
}

/// The form of a POST, bounded.
async fn read_form(body: Incoming) -> Result<Params, Problem> {
    let bytes = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|_| Problem::new(413, "too-large", "the form is too large"))?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| Problem::bad("the form is not UTF-8"))?;
    Ok(Params::parse(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_repeated_keys_and_drop_empty_values() {
        let p = Params::parse("id=a&id=b&id=&reason=+why+&x=");
        assert_eq!(p.all("id"), vec!["a", "b"]);
        assert_eq!(p.get("reason"), Some("why"));
        assert_eq!(p.get("x"), None);
    }

    #[test]
    fn a_problem_is_problem_json_with_a_stable_type() {
        let r = Problem::new(403, "writes-disabled", "no").response("/x");
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }
}
