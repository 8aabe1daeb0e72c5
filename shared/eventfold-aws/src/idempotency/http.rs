//! The `Idempotency-Key` header over `lambda_http`: read and validate it, hash the request,
//! run the handler under the lock, store or drop its response, and answer duplicates.
//!
//! [`guarded`] is the whole flow; the pieces are public for handlers that need another shape.
//!
//! | engine outcome | HTTP |
//! |---|---|
//! | invalid key | 400 `invalid-idempotency-key` |
//! | store unavailable | 503 `unavailable` (the request is not run unguarded) |
//! | [`Begin::KeyReused`] | 422 `idempotency-key-reused` |
//! | [`Begin::InProgress`] | 409 `idempotency-in-progress`, `Retry-After: <seconds>` |
//! | [`Begin::Replay`] | the stored status, headers and body, `Idempotent-Replayed: true` |
//! | [`Begin::Run`] | the handler's response; stored when < 500, else the record is deleted |

use crate::http::{Caller, Problem, lambda_deadline};
use eventfold_idempotency::{
    Begin, Idempotency, IdempotencyError, IdempotencyKey, IdempotencyStore, PayloadHash, Scope,
    StoredResponse, payload_hash, validate_key,
};
use lambda_http::http::{HeaderName, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use std::future::Future;

/// The request header naming the key (HTTP header names are case-insensitive).
pub const KEY_HEADER: &str = "idempotency-key";

/// The header marking a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Response headers stored with the body and replayed; others (dates, request ids, tracing)
/// describe one delivery, not the answer.
pub const STORED_HEADERS: &[&str] = &[
    "content-type",
    "content-location",
    "location",
    "etag",
    "last-modified",
];

/// Whether a request without the header is refused (Powertools' `raise_on_no_idempotency_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// No header: the handler runs unguarded.
    Optional,
    /// No header: 400 `invalid-idempotency-key`.
    Required,
}

impl From<&IdempotencyError> for Problem {
    fn from(e: &IdempotencyError) -> Self {
        match e {
            IdempotencyError::Invalid(detail) => Problem::bad_request(
                "invalid-idempotency-key",
                format!("Idempotency-Key: {detail}"),
            ),
            IdempotencyError::Unavailable(_) => Problem::new(
                503,
                "unavailable",
                "Service unavailable",
                "the idempotency store is unavailable; retry later",
            ),
            IdempotencyError::Refused(_)
            | IdempotencyError::Corrupt { .. }
            | IdempotencyError::LockLost { .. }
            | IdempotencyError::TooLarge { .. } => {
                tracing::error!(error = %e, "idempotency failure");
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

/// The request's key: `None` without the header; [`IdempotencyError::Invalid`] when it is
/// not 1–255 visible ASCII characters or is sent more than once.
pub fn key_of(req: &Request) -> Result<Option<IdempotencyKey>, IdempotencyError> {
    let mut values = req.headers().get_all(KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(IdempotencyError::Invalid("sent more than once".into()));
    }
    let text = value
        .to_str()
        .map_err(|_| IdempotencyError::Invalid("not visible ASCII".into()))?;
    validate_key(text).map(Some)
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// The request's hash: method, path and body (JSON canonicalized).
pub fn request_hash(req: &Request) -> PayloadHash {
    payload_hash(req.method().as_str(), req.uri().path(), body_bytes(req))
}

/// What of `resp` is stored for replay: status, [`STORED_HEADERS`], body; `None` for a body
/// that is not text (stored as text, so it is not stored).
pub fn stored_response(resp: &Response<Body>) -> Option<StoredResponse> {
    let body = match resp.body() {
        Body::Empty => String::new(),
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8(b.clone()).ok()?,
        _ => return None,
    };
    let headers = resp
        .headers()
        .iter()
        .filter(|(name, _)| STORED_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, v)| Some((name.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    Some(StoredResponse {
        status: resp.status().as_u16(),
        headers,
        body,
    })
}

/// The stored response again, marked `Idempotent-Replayed: true`.
pub fn replay_response(stored: &StoredResponse) -> Response<Body> {
    let mut resp = Response::new(if stored.body.is_empty() {
        Body::Empty
    } else {
        Body::Text(stored.body.clone())
    });
    *resp.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

/// 422 `idempotency-key-reused`.
pub fn key_reused(instance: &str) -> Response<Body> {
    Problem::new(
        422,
        "idempotency-key-reused",
        "Idempotency key reused",
        "this Idempotency-Key was used for a different request; use a new key",
    )
    .into_response(instance)
}

/// 409 `idempotency-in-progress` with `Retry-After` (whole seconds, at least 1).
pub fn in_progress(retry_after: std::time::Duration, instance: &str) -> Response<Body> {
    let secs = retry_after.as_secs().max(1);
    let mut resp = Problem::new(
        409,
        "idempotency-in-progress",
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry later",
    )
    .with("retry_after", secs)
    .into_response(instance);
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(secs));
    resp
}

/// The answer to a request that must not run: a replay, 422 or 409 with `Retry-After`.
/// `None` for [`Begin::Run`] (run it).
pub fn answer<S: IdempotencyStore>(begin: &Begin<'_, S>, instance: &str) -> Option<Response<Body>> {
    match begin {
        Begin::Run(_) => None,
        Begin::Replay(stored) => Some(replay_response(stored)),
        Begin::KeyReused => Some(key_reused(instance)),
        Begin::InProgress { retry_after } => Some(in_progress(*retry_after, instance)),
    }
}

/// How an API runs a write that honours an optional `Idempotency-Key`: without an engine, the
/// handler runs as is; with one, under [`guarded`] ([`KeyPolicy::Optional`]), scoped by the
/// caller's tenant and actor, the handler's problem becoming its (stored) response.
pub async fn optionally_guarded<S, F, Fut>(
    idempotency: Option<&Idempotency<S>>,
    req: &Request,
    caller: &Caller,
    handler: F,
) -> Result<Response<Body>, Problem>
where
    S: IdempotencyStore,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Response<Body>, Problem>>,
{
    let Some(idempotency) = idempotency else {
        return handler().await;
    };
    let scope = Scope::new(&caller.tenant, &caller.actor);
    let path = req.uri().path();
    let run = || async { handler().await.unwrap_or_else(|p| p.into_response(path)) };
    Ok(guarded(idempotency, KeyPolicy::Optional, req, &scope, run).await)
}

/// Runs `handler` for `req` at most once per `Idempotency-Key` in `scope`; see the module's
/// table for what duplicates get. A store failure after the handler ran is logged and the
/// response still goes out (the record then expires at the invocation's deadline).
///
/// Wiring it into an API whose handlers return `Result<Response, Problem>`:
///
/// ```
/// use eventfold_idempotency::{Idempotency, IdempotencyStore, Scope};
/// use eventfold_aws::http::{Caller, Problem, json_response};
/// use eventfold_aws::idempotency::http::{KeyPolicy, guarded};
/// use lambda_http::{Body, Request, Response};
/// use std::sync::Arc;
///
/// struct Api {
///     // From `StoreConfig::idempotency` (`IdempotencySettings::engine`); `None`: no table.
///     idempotency: Option<Idempotency<Arc<dyn IdempotencyStore>>>,
/// }
///
/// impl Api {
///     async fn command(&self, _req: &Request, _caller: &Caller) -> Result<Response<Body>, Problem> {
///         Ok(json_response(201, &serde_json::json!({"version": 1})))
///     }
///
///     async fn post_command(&self, req: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
///         let Some(idempotency) = &self.idempotency else {
///             return self.command(req, caller).await;
///         };
///         let scope = Scope::new(&caller.tenant, &caller.actor);
///         Ok(guarded(idempotency, KeyPolicy::Optional, req, &scope, || async {
///             let path = req.uri().path();
///             self.command(req, caller).await.unwrap_or_else(|p| p.into_response(path))
///         })
///         .await)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventfold_idempotency::{IdempotencyConfig, MemoryIdempotencyStore};
/// # let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryIdempotencyStore::new());
/// # let api = Api { idempotency: Some(Idempotency::new(store, IdempotencyConfig::default())) };
/// # let caller = Caller { actor: "alice".into(), tenant: "acme".into(), scopes: vec![] };
/// # let req = || lambda_http::http::Request::builder().method("POST").uri("/c")
/// #     .header("idempotency-key", "k-1").body(Body::Text("{}".into())).unwrap();
/// # let first = api.post_command(&req(), &caller).await.unwrap();
/// # let again = api.post_command(&req(), &caller).await.unwrap();
/// # assert_eq!((first.status().as_u16(), again.status().as_u16()), (201, 201));
/// # assert!(first.headers().get("idempotent-replayed").is_none());
/// # assert_eq!(again.headers()["idempotent-replayed"], "true");
/// # }
/// ```
pub async fn guarded<S, F, Fut>(
    idempotency: &Idempotency<S>,
    policy: KeyPolicy,
    req: &Request,
    scope: &Scope,
    handler: F,
) -> Response<Body>
where
    S: IdempotencyStore,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let instance = req.uri().path();
    let key = match (key_of(req), policy) {
        (Ok(Some(key)), _) => key,
        (Ok(None), KeyPolicy::Optional) => return handler().await,
        (Ok(None), KeyPolicy::Required) => {
            let e = IdempotencyError::Invalid("the header is required here".into());
            return Problem::from(&e).into_response(instance);
        }
        (Err(e), _) => return Problem::from(&e).into_response(instance),
    };
    let begin = match idempotency
        .begin(scope, &key, &request_hash(req), lambda_deadline(req))
        .await
    {
        Ok(b) => b,
        Err(e) => return Problem::from(&e).into_response(instance),
    };
    let lock = match begin {
        Begin::Run(lock) => lock,
        Begin::Replay(stored) => {
            tracing::info!(idempotency_key = %key, status = stored.status, "idempotent replay");
            return replay_response(&stored);
        }
        Begin::KeyReused => return key_reused(instance),
        Begin::InProgress { retry_after } => return in_progress(retry_after, instance),
    };
    let resp = handler().await;
    let finished = match stored_response(&resp) {
        Some(stored) => lock.finish(stored).await,
        None => lock.release().await,
    };
    match finished {
        Ok(f) => {
            tracing::debug!(idempotency_key = %key, outcome = ?f, "idempotency record finished")
        }
        Err(e) => {
            tracing::warn!(idempotency_key = %key, error = %e, "idempotency record left in progress until it expires")
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use eventfold_idempotency::{Clock, IdempotencyConfig, ManualClock, MemoryIdempotencyStore};
    use lambda_http::RequestExt;
    use lambda_http::http;
    use std::cell::Cell;
    use std::sync::Arc;

    fn request(key: Option<&str>, body: &str) -> Request {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/api/v1/events/commands");
        if let Some(k) = key {
            b = b.header(KEY_HEADER, k);
        }
        b.body(Body::Text(body.to_owned())).expect("valid request")
    }

    fn created(n: u32) -> Response<Body> {
        let mut resp = crate::http::json_response(201, &serde_json::json!({"n": n}));
        resp.headers_mut()
            .insert("location", HeaderValue::from_static("/things/1"));
        resp.headers_mut()
            .insert("x-amzn-requestid", HeaderValue::from_static("r-1"));
        resp
    }

    fn engine() -> (Idempotency<MemoryIdempotencyStore>, ManualClock) {
        let clock = ManualClock::new(Utc::now());
        let engine = Idempotency::new(MemoryIdempotencyStore::new(), IdempotencyConfig::default())
            .with_clock(Arc::new(clock.clone()));
        (engine, clock)
    }

    fn text(resp: &Response<Body>) -> String {
        match resp.body() {
            Body::Text(t) => t.clone(),
            Body::Empty => String::new(),
            other => panic!("unexpected body {other:?}"),
        }
    }

    fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
        resp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_duplicate_replays_without_running_the_handler() {
        let (engine, _) = engine();
        let scope = Scope::new("acme", "alice");
        let runs = Cell::new(0);
        let handler = || async {
            runs.set(runs.get() + 1);
            created(runs.get())
        };
        let first = guarded(
            &engine,
            KeyPolicy::Optional,
            &request(Some("k1"), r#"{"a":1,"b":2}"#),
            &scope,
            handler,
        )
        .await;
        assert_eq!(first.status(), 201);
        assert_eq!(header(&first, REPLAYED_HEADER), None);
        let again = guarded(
            &engine,
            KeyPolicy::Optional,
            &request(Some("k1"), r#"{ "b": 2, "a": 1 }"#),
            &scope,
            handler,
        )
        .await;
        assert_eq!(runs.get(), 1, "the duplicate must not run the handler");
        assert_eq!(again.status(), 201);
        assert_eq!(text(&again), text(&first));
        assert_eq!(header(&again, REPLAYED_HEADER), Some("true"));
        assert_eq!(header(&again, "content-type"), Some("application/json"));
        assert_eq!(header(&again, "location"), Some("/things/1"));
        assert_eq!(
            header(&again, "x-amzn-requestid"),
            None,
            "per-delivery headers are not replayed"
        );
        // Without a key nothing is guarded.
        let unkeyed = guarded(
            &engine,
            KeyPolicy::Optional,
            &request(None, "{}"),
            &scope,
            handler,
        )
        .await;
        assert_eq!((unkeyed.status().as_u16(), runs.get()), (201, 2));
    }

    #[tokio::test]
    async fn reused_keys_running_duplicates_and_bad_keys_are_problems() {
        let (engine, clock) = engine();
        let scope = Scope::new("acme", "alice");
        let ok = || async { created(1) };
        guarded(
            &engine,
            KeyPolicy::Optional,
            &request(Some("k"), r#"{"a":1}"#),
            &scope,
            ok,
        )
        .await;
        let reused = guarded(
            &engine,
            KeyPolicy::Optional,
            &request(Some("k"), r#"{"a":2}"#),
            &scope,
            ok,
        )
        .await;
        assert_eq!(reused.status(), 422);
        assert!(text(&reused).contains("/problems/idempotency-key-reused"));

        // A lock held by a running request (taken directly, deadline 10 s away).
        let key = validate_key("busy").expect("valid");
        let req = request(Some("busy"), "{}");
        let Ok(Begin::Run(lock)) = engine
            .begin(
                &scope,
                &key,
                &request_hash(&req),
                Some(clock.now() + chrono::Duration::seconds(10)),
            )
            .await
        else {
            panic!("first request runs");
        };
        clock.advance(chrono::Duration::milliseconds(6_500));
        let busy = guarded(&engine, KeyPolicy::Optional, &req, &scope, ok).await;
        assert_eq!(busy.status(), 409);
        assert_eq!(header(&busy, "retry-after"), Some("4"));
        assert!(text(&busy).contains("/problems/idempotency-in-progress"));
        drop(lock);

        for bad in ["", "has space", &"k".repeat(256)] {
            let resp = guarded(
                &engine,
                KeyPolicy::Optional,
                &request(Some(bad), "{}"),
                &scope,
                ok,
            )
            .await;
            assert_eq!(resp.status(), 400, "{bad:?}");
            assert!(text(&resp).contains("/problems/invalid-idempotency-key"));
        }
        let missing = guarded(
            &engine,
            KeyPolicy::Required,
            &request(None, "{}"),
            &scope,
            ok,
        )
        .await;
        assert_eq!(missing.status(), 400);
        let mut twice = request(Some("a"), "{}");
        twice
            .headers_mut()
            .append(KEY_HEADER, HeaderValue::from_static("b"));
        assert!(matches!(key_of(&twice), Err(IdempotencyError::Invalid(_))));
    }

    #[test]
    fn a_refusing_store_is_an_internal_error_and_an_outage_a_503() {
        let refused = Problem::from(&IdempotencyError::Refused("no such table".into()));
        assert_eq!((refused.status, refused.slug), (500, "internal"));
        let down = Problem::from(&IdempotencyError::Unavailable("throttled".into()));
        assert_eq!((down.status, down.slug), (503, "unavailable"));
    }

    #[tokio::test]
    async fn a_server_error_is_not_stored_so_the_retry_runs() {
        let (engine, _) = engine();
        let scope = Scope::new("acme", "alice");
        let failing = || async {
            Problem::new(503, "unavailable", "Service unavailable", "down").into_response("/x")
        };
        let req = request(Some("retry-me"), "{}");
        assert_eq!(
            guarded(&engine, KeyPolicy::Optional, &req, &scope, failing)
                .await
                .status(),
            503
        );
        let key = validate_key("retry-me").expect("valid");
        let record_key = scope.record_key(&key);
        assert_eq!(engine.store().get(&record_key).await.expect("read"), None);
        let retried = guarded(&engine, KeyPolicy::Optional, &req, &scope, || async {
            created(2)
        })
        .await;
        assert_eq!(retried.status(), 201);
        assert_eq!(header(&retried, REPLAYED_HEADER), None, "the retry ran");
    }

    #[test]
    fn the_deadline_comes_from_the_lambda_context() {
        let mut ctx = lambda_http::Context::default();
        assert_eq!(lambda_deadline(&request(None, "")), None);
        assert_eq!(
            lambda_deadline(&request(None, "").with_lambda_context(ctx.clone())),
            None
        );
        ctx.deadline = 1_800_000_000_123;
        let req = request(None, "").with_lambda_context(ctx);
        assert_eq!(
            lambda_deadline(&req).map(|d| d.timestamp_millis()),
            Some(1_800_000_000_123)
        );
    }
}
