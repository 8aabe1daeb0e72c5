//! HTTP edges of the Lambda functions: the caller's identity from the JWT authorizer, JSON
//! responses, and the one place where errors become RFC 9457 problem responses.

use eventfold::CommandError;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Lambda's limit on a synchronous function's answer (the payload 2.0 response JSON, the
/// body inside it as a JSON string): 6,291,556 bytes, as Lambda's `ResponseSizeTooLarge`
/// error states it. Past it API Gateway answers 500 and the function's answer is lost.
pub const LAMBDA_RESPONSE_LIMIT: usize = 6 * 1024 * 1024 + 100;

/// The byte budget of one list page (5 MiB, 5,242,880 bytes), counted in
/// [`eventfold::wire_len`] bytes: each item as it travels, its body escaped once more as a
/// JSON string (every `"` and `\` twice), so the budget holds for any content. It leaves
/// [`LAMBDA_RESPONSE_LIMIT`] - budget = 1,048,676 bytes for everything else in the answer:
/// the page's other members (a cursor or offsets of at most 64 partitions: a few KB), the
/// separators, the headers and the payload 2.0 envelope (a few hundred bytes). A single item
/// always fits: the largest is an event or record of one DynamoDB item (400 KB), at most 7
/// wire bytes per stored byte (a control character: 1 byte stored, `\u0001` in the body,
/// `\\u0001` on the wire), 2.8 MB.
pub const PAGE_BYTES: usize = 5 * 1024 * 1024;

/// Prefix of every problem `type`; the slug after it is the stable part callers branch on.
pub const PROBLEM_BASE: &str = "https://eventfold.dev/problems/";

/// An RFC 9457 problem: a caller's mistake (4xx) or our failure (5xx).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Stable slug, e.g. `malformed-json`; `type` is [`PROBLEM_BASE`] + slug.
    pub slug: &'static str,
    /// Short summary of the problem type.
    pub title: &'static str,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// Extension members (e.g. `rule` on a rejection).
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with no extension members.
    pub fn new(
        status: u16,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// 400: the request is malformed or names something that does not exist.
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(400, slug, "Bad request", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "not-found", "Not found", detail)
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug)
    }

    /// The `application/problem+json` response; `instance` is the request path.
    pub fn into_response(self, instance: &str) -> Response<Body> {
        if self.status >= 500 {
            tracing::error!(status = self.status, problem = self.slug, detail = %self.detail, "request failed");
        } else {
            tracing::info!(status = self.status, problem = self.slug, detail = %self.detail, "request refused");
        }
        let mut body = json!({
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extensions);
        }
        response(self.status, "application/problem+json", body.to_string())
    }
}

impl From<&CommandError> for Problem {
    fn from(e: &CommandError) -> Self {
        match e {
            CommandError::Rejected(r) => {
                Problem::new(422, "rejected", "Command rejected", r.message.clone())
                    .with("rule", r.rule.to_string())
            }
            CommandError::Conflict {
                expected, actual, ..
            } => Problem::new(409, "conflict", "Version conflict", e.to_string())
                .with("expected_version", *expected)
                .with("actual_version", *actual),
            CommandError::TooLarge {
                stream_id,
                size,
                limit,
            } => Problem::new(413, "payload-too-large", "Payload too large", e.to_string())
                .with("stream_id", stream_id.clone())
                .with("size", *size as u64)
                .with("limit", *limit as u64),
            CommandError::Unavailable(_) => Problem::new(
                503,
                "unavailable",
                "Service unavailable",
                "the event store is unavailable; retry later",
            ),
            CommandError::Internal(_) => Problem::new(
                500,
                "internal",
                "Internal error",
                "an internal error occurred",
            ),
        }
    }
}

/// Streaming outcomes: unknown topic 404, bad input 400 (`invalid-request`, `out-of-range`),
/// oversize 413, an existing topic with other settings 409 `topic-exists` (with its settings),
/// a member's out-of-date view of its group 409 `rebalanced` (with the current `generation`,
/// and its `partitions` when it still is a member).
impl From<&eventfold_streaming::StreamingError> for Problem {
    fn from(e: &eventfold_streaming::StreamingError) -> Self {
        match e {
            eventfold_streaming::StreamingError::UnknownTopic(_) => {
                Problem::not_found(e.to_string())
            }
            eventfold_streaming::StreamingError::Invalid(m) => {
                Problem::bad_request("invalid-request", m.clone())
            }
            eventfold_streaming::StreamingError::OutOfRange(m) => {
                Problem::bad_request("out-of-range", m.clone())
            }
            eventfold_streaming::StreamingError::TooLarge(m) => {
                Problem::new(413, "payload-too-large", "Payload too large", m.clone())
            }
            eventfold_streaming::StreamingError::TopicExists { existing, .. } => {
                Problem::new(409, "topic-exists", "Topic exists", e.to_string())
                    .with("partitions", existing.settings.partitions)
                    .with("retention_days", existing.settings.retention_days)
                    .with("description", existing.settings.description.clone())
            }
            eventfold_streaming::StreamingError::Rebalanced {
                generation,
                partitions,
                detail,
            } => {
                let p = Problem::new(409, "rebalanced", "Group rebalanced", detail.clone())
                    .with("generation", *generation);
                match partitions {
                    Some(owned) => p.with("partitions", owned.clone()),
                    None => p,
                }
            }
            eventfold_streaming::StreamingError::Conflict(_) => {
                Problem::new(409, "conflict", "Conflict", e.to_string())
            }
            eventfold_streaming::StreamingError::Unavailable(_) => Problem::new(
                503,
                "unavailable",
                "Service unavailable",
                "a backing store is unavailable; retry later",
            ),
            eventfold_streaming::StreamingError::Internal(_) => {
                tracing::error!(error = %e, "streaming failure");
                Problem::new(
                    500,
                    "internal",
                    "Internal error",
                    "an internal error occurred",
                )
            }
        }
    }
}

fn response(status: u16, content_type: &str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body));
    *resp.status_mut() = lambda_http::http::StatusCode::from_u16(status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        lambda_http::http::header::CONTENT_TYPE,
        lambda_http::http::HeaderValue::from_str(content_type).unwrap_or(
            lambda_http::http::HeaderValue::from_static("application/json"),
        ),
    );
    resp
}

/// A JSON response with `status`.
pub fn json_response(status: u16, body: &impl Serialize) -> Response<Body> {
    match serde_json::to_string(body) {
        Ok(text) => response(status, "application/json", text),
        Err(e) => Problem::new(
            500,
            "internal",
            "Internal error",
            format!("response not serializable: {e}"),
        )
        .into_response(""),
    }
}

/// Who is calling, from the JWT the gateway validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `sub`: the actor.
    pub actor: String,
    /// `tenant`: prefix of every stream the caller may touch.
    pub tenant: String,
    /// `scope`, split on spaces.
    pub scopes: Vec<String>,
}

impl Caller {
    /// Refuses with 403 unless the token carries `scope`.
    pub fn require(&self, scope: &str) -> Result<(), Problem> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(Problem::new(
                403,
                "forbidden",
                "Forbidden",
                format!("the token lacks scope '{scope}'"),
            ))
        }
    }
}

/// Reads the caller from the HTTP API JWT authorizer's claims. The gateway (API Gateway in
/// AWS, the local gateway on a laptop) has already checked the signature; a request without
/// claims never passed it, so it is 401.
pub fn caller(req: &Request) -> Result<Caller, Problem> {
    let unauthorized =
        |why: &str| Problem::new(401, "unauthorized", "Unauthorized", why.to_owned());
    let ctx = req.request_context_ref();
    let claims = match ctx {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) => c
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|j| &j.claims),
        _ => None,
    }
    .ok_or_else(|| unauthorized("no verified bearer token"))?;
    let get = |k: &str| claims.get(k).filter(|v| !v.is_empty()).cloned();
    let actor = get("sub").ok_or_else(|| unauthorized("token has no 'sub' claim"))?;
    let tenant = get("tenant").ok_or_else(|| unauthorized("token has no 'tenant' claim"))?;
    // A token whose tenant cannot own streams is a bad credential, not a bad request.
    eventfold::StreamId::check_tenant(&tenant)
        .map_err(|e| unauthorized(&format!("the token's tenant claim is not usable: {e}")))?;
    let scopes = get("scope")
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Caller {
        actor,
        tenant,
        scopes,
    })
}

/// The `routeKey` API Gateway matched (`METHOD /path/{param}`), if any: what a function
/// routes on, so the template's routes are its one route table.
pub fn route_key(req: &Request) -> Option<&str> {
    match req.request_context_ref()? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx.route_key.as_deref(),
        _ => None,
    }
}

/// The invocation's deadline from the Lambda context; `None` outside Lambda.
pub fn lambda_deadline(req: &Request) -> Option<chrono::DateTime<chrono::Utc>> {
    req.lambda_context_ref()
        .map(|c| c.deadline)
        .filter(|d| *d > 0)
        .and_then(|d| i64::try_from(d).ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
}

/// The correlation id of a request: the caller's `x-correlation-id` when it is sane, else the
/// gateway's request id, else a fresh one.
pub fn correlation_id(req: &Request) -> String {
    let header = req
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()));
    if let Some(h) = header {
        return h.to_owned();
    }
    match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
        _ => None,
    }
    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Longest trace header kept: X-Ray's is about 100 characters; anything far longer is not one
/// and must not ride on every commit and message.
const MAX_TRACE_HEADER: usize = 256;

/// Whether `v` can be an X-Ray trace header (`Root=1-...;Parent=...;Sampled=...`): printable
/// ASCII of a sane length carrying a `Root=` entry.
pub fn is_trace_header(v: &str) -> bool {
    (1..=MAX_TRACE_HEADER).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_graphic())
        && v.split(';').any(|part| part.starts_with("Root="))
}

/// The X-Ray trace header of the invocation: the Lambda context's (the runtime's
/// `Lambda-Runtime-Trace-Id`, also in `_X_AMZN_TRACE_ID`), else the request's
/// `X-Amzn-Trace-Id` (API Gateway's, or a caller's through the local gateway).
pub fn trace_header(req: &Request) -> Option<String> {
    let from_context = req
        .lambda_context_ref()
        .and_then(|c| c.xray_trace_id.clone());
    from_context
        .or_else(|| {
            req.headers()
                .get("x-amzn-trace-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|v| is_trace_header(v))
}

/// Rewrites every number with no fractional part (`905.0`) as the integer it is, in place.
/// JSON (and JSON Schema's `integer`) does not tell `905.0` from `905`, but serde's integer
/// fields refuse a float: without this, a body the contract allows would be refused.
pub fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^63 (or below 2^64 for the positive) the cast is exact for an
            // integral float; outside, the float stays and the field's type refuses it.
            let integer = if f.fract() != 0.0 {
                None
            } else if (-(2f64.powi(63))..2f64.powi(63)).contains(&f) {
                Some(serde_json::Number::from(f as i64))
            } else if (0.0..2f64.powi(64)).contains(&f) {
                Some(serde_json::Number::from(f as u64))
            } else {
                None
            };
            if let Some(i) = integer {
                *n = i;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(integral_numbers_as_integers);
        }
        _ => {}
    }
}

#[cfg(test)]
mod trace_tests {
    use super::*;

    #[test]
    fn trace_headers_come_from_the_context_else_the_request() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let mut req = Request::default();
        assert_eq!(trace_header(&req), None);
        req.headers_mut().insert(
            "x-amzn-trace-id",
            lambda_http::http::HeaderValue::from_static(header),
        );
        assert_eq!(trace_header(&req).as_deref(), Some(header));
        let mut ctx = lambda_http::Context::default();
        ctx.xray_trace_id = Some("Root=1-00000000-000000000000000000000001".to_owned());
        let req = req.with_lambda_context(ctx);
        assert_eq!(
            trace_header(&req).as_deref(),
            Some("Root=1-00000000-000000000000000000000001")
        );
        assert!(!is_trace_header("not a trace"));
        assert!(!is_trace_header(&format!("Root={}", "x".repeat(300))));
    }
}

#[cfg(test)]
mod too_large_tests {
    use super::*;

    /// A commit the store refused for its size answers 413 `payload-too-large`, naming the
    /// stream, the size and the limit.
    #[test]
    fn a_commit_too_large_names_its_stream() {
        let e = CommandError::TooLarge {
            stream_id: "t1/Inventory-apple".into(),
            size: 500_000,
            limit: 409_600,
        };
        let problem = Problem::from(&e);
        assert_eq!((problem.status, problem.slug), (413, "payload-too-large"));
        assert!(problem.detail.contains("t1/Inventory-apple"), "{problem:?}");
        assert_eq!(
            problem.extensions.get("stream_id"),
            Some(&Value::from("t1/Inventory-apple"))
        );
        assert_eq!(problem.extensions.get("size"), Some(&Value::from(500_000)));
        assert_eq!(problem.extensions.get("limit"), Some(&Value::from(409_600)));
    }
}
