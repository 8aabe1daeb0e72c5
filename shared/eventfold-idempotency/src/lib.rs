//! Idempotent requests (AWS Lambda Powertools parity): the record model, the store port, the
//! engine that decides what a request with an `Idempotency-Key` gets, and a memory adapter.
//!
//! A request names a key; the key is scoped by tenant and actor ([`Scope::record_key`]). The
//! first request takes a lock: one conditional write of an `INPROGRESS` record that carries the
//! request's payload hash and expires at the invocation's deadline. A duplicate learns from the
//! refused write (the store returns the record that holds the key, no extra read) whether to
//! wait ([`Begin::InProgress`]), to replay the stored response ([`Begin::Replay`]) or that the
//! key was reused for another payload ([`Begin::KeyReused`]). The handler's response is then
//! stored (`COMPLETED`, kept for [`IdempotencyConfig::expires_after`]) or, when the handler
//! failed (5xx), the record is deleted so a retry runs again. Both writes are conditional on the
//! lock still being ours (its `lock_id`), so a late finisher never overwrites a newer lock.
//!
//! Expiry is decided here, against an injectable [`Clock`], never by the store's TTL: a TTL
//! only garbage-collects, days late. The HTTP mapping (status codes, headers) belongs to the
//! caller; `eventfold-aws` has one for `lambda_http`.
//!
//! Owns: idempotency, as a product of its own beside the event store (the command API and
//! the streaming API both use it). Must not import: any AWS crate, `lambda_*`, an async
//! runtime in its public API, or another Eventfold crate but the core: it needs no event.
#![forbid(unsafe_code)]

mod engine;
mod memory;

pub use engine::{Begin, Decision, Finished, Idempotency, Lock, NotStored, decide};
pub use memory::MemoryIdempotencyStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventfold::Cause;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Longest accepted `Idempotency-Key` value, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// Default limit of a stored response (status, headers and body), below DynamoDB's 400 KB item
/// limit with room for the record's other attributes.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 350 * 1024;

/// Where "now" comes from: the system clock in production, a hand-moved one in tests.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// [`Clock`] reading `chrono::Utc::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A [`Clock`] that only moves when told to; clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: std::sync::Arc<std::sync::Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: std::sync::Arc::new(std::sync::Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Puts the clock at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tunables of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// How long a completed record replays its response (default 1 h), counted from completion.
    pub expires_after: Duration,
    /// In-progress lifetime when the caller has no deadline (set it to the function timeout;
    /// default 10 s, the template's). With a deadline, the record expires at the deadline.
    pub default_in_progress: Duration,
    /// Largest response that is stored (status, headers and body); a larger one is let through
    /// unstored and its lock deleted (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            expires_after: Duration::from_secs(3600),
            default_in_progress: Duration::from_secs(10),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Why an idempotent request could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key itself is unusable (HTTP 400).
    #[error("invalid idempotency key: {0}")]
    Invalid(String),
    /// The store failed or throttled; retrying later may succeed (HTTP 503). The request is
    /// refused rather than run unguarded, which could run it twice.
    #[error("idempotency store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The store refused the request for good (a missing table or permission, a value it
    /// cannot hold): retrying the same request fails the same way (HTTP 500, logged; the
    /// request is refused, not run unguarded).
    #[error("idempotency store refused the request: {0}")]
    Refused(#[source] Cause),
    /// A stored record could not be read back.
    #[error("corrupt idempotency record {record_key}: {detail}")]
    Corrupt {
        /// The record's key.
        record_key: String,
        /// What was wrong.
        detail: String,
    },
    /// The record is no longer ours (it expired and another request took it over, or it is
    /// gone): a complete or release was refused and changed nothing.
    #[error("idempotency lock on {record_key} lost")]
    LockLost {
        /// The record's key.
        record_key: String,
    },
    /// The record would exceed what the store holds in one item; nothing was written.
    #[error("idempotency record of {size} bytes exceeds the store's limit of {limit} bytes")]
    TooLarge {
        /// Estimated size of the record.
        size: usize,
        /// The store's limit.
        limit: usize,
    },
}

/// A validated `Idempotency-Key` value: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an `Idempotency-Key` header value: 1–255 visible ASCII characters (0x21..=0x7E), so
/// no spaces, controls or non-ASCII. Pure; [`IdempotencyError::Invalid`] otherwise.
pub fn validate_key(raw: &str) -> Result<IdempotencyKey, IdempotencyError> {
    if raw.is_empty() {
        return Err(IdempotencyError::Invalid("the key is empty".into()));
    }
    if let Some((i, c)) = raw.char_indices().find(|(_, c)| !matches!(c, '!'..='~')) {
        return Err(IdempotencyError::Invalid(format!(
            "character {c:?} at byte {i} is not visible ASCII (0x21..=0x7E)"
        )));
    }
    // Only ASCII is left, so bytes are characters.
    if raw.len() > MAX_KEY_LEN {
        return Err(IdempotencyError::Invalid(format!(
            "the key has {} characters; at most {MAX_KEY_LEN} are allowed",
            raw.len()
        )));
    }
    Ok(IdempotencyKey(raw.to_owned()))
}

/// Who a key belongs to: the same key from another tenant or actor is another record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Tenant (from the caller's token).
    pub tenant: String,
    /// Actor (the token's `sub`).
    pub actor: String,
}

impl Scope {
    /// The scope of `actor` in `tenant`.
    pub fn new(tenant: impl Into<String>, actor: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            actor: actor.into(),
        }
    }

    /// The record key of `key` in this scope: SHA-256 hex of the length-prefixed tenant, actor
    /// and key. Hashed rather than `"{tenant}#{actor}#{key}"` because actors and keys may
    /// contain any separator (that join would let `a#b`+`c` collide with `a`+`b#c`), an actor
    /// (a JWT `sub`) has no length bound while a partition key has one (2 KB), and the actor
    /// (often an e-mail) stays out of the key that logs and metrics show.
    pub fn record_key(&self, key: &IdempotencyKey) -> String {
        let mut h = Sha256::new();
        h.update(b"eventfold-idempotency-v1");
        for part in [self.tenant.as_str(), self.actor.as_str(), key.as_str()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// SHA-256 hex of a request's canonical form; same key with another hash is a reused key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PayloadHash(String);

impl PayloadHash {
    /// A hash read back from a store.
    pub fn from_hex(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    /// The hash as 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Hashes a request: the method (upper-cased), the route and the body. A JSON body is parsed
/// and re-serialized canonically (object keys sorted by their UTF-8 bytes, no whitespace), so
/// formatting and key order do not matter; any other body is hashed as its bytes. Numbers keep
/// their JSON spelling class (`1` and `1.0` differ), as a handler may tell them apart.
pub fn payload_hash(method: &str, route: &str, body: &[u8]) -> PayloadHash {
    let mut h = Sha256::new();
    h.update(b"eventfold-request-v1\n");
    h.update(method.to_ascii_uppercase().as_bytes());
    h.update(b"\n");
    h.update(route.as_bytes());
    h.update(b"\n");
    let text = std::str::from_utf8(body).ok();
    if text.is_some_and(|t| t.trim().is_empty()) {
        h.update(b"empty");
    } else if let Some(value) = text.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        let mut canonical = String::with_capacity(body.len());
        write_canonical(&value, &mut canonical);
        h.update(b"json\n");
        h.update(canonical.as_bytes());
    } else {
        h.update(b"raw\n");
        h.update(body);
    }
    PayloadHash(hex(&h.finalize()))
}

/// Canonical JSON text of `value`. Keys are sorted here rather than trusting `serde_json`'s map
/// order, which a `preserve_order` feature anywhere in the build would change.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

/// State of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// A handler holds the lock and is running.
    #[serde(rename = "INPROGRESS")]
    InProgress,
    /// The handler finished; the response is stored for replay.
    #[serde(rename = "COMPLETED")]
    Completed,
}

impl Status {
    /// The stored spelling: `INPROGRESS` or `COMPLETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "INPROGRESS",
            Status::Completed => "COMPLETED",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "INPROGRESS" => Some(Status::InProgress),
            "COMPLETED" => Some(Status::Completed),
            _ => None,
        }
    }
}

/// A response as stored for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// The headers worth replaying (content type, location, ...), in order.
    pub headers: Vec<(String, String)>,
    /// The body text.
    pub body: String,
}

impl StoredResponse {
    /// A response with no headers.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Bytes it takes to store: body and headers (the status is noise at this scale).
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// One idempotency record, as every store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// [`Scope::record_key`] of the request's key: the store's primary key.
    pub record_key: String,
    /// Tenant of the scope, kept in clear for operations (the actor is not stored).
    pub tenant: String,
    /// The key as the caller sent it, for operations.
    pub key: String,
    /// `INPROGRESS` or `COMPLETED`.
    pub status: Status,
    /// Hash of the request that took the key.
    pub payload_hash: PayloadHash,
    /// Random id of the lock that wrote the record: completes and releases must present it.
    pub lock_id: String,
    /// When the record stops counting (millisecond precision): a record at or past it is
    /// treated as absent and taken over by the next request.
    pub expires_at: DateTime<Utc>,
    /// The stored response (`COMPLETED` only).
    pub response: Option<StoredResponse>,
}

impl IdempotencyRecord {
    /// Whether the record still holds its key at `now` (the one expiry rule every store uses).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }
}

/// What a lock attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The record was written: the caller holds the lock.
    Locked,
    /// A live record holds the key; here it is, as the refused write returned it.
    Held(IdempotencyRecord),
}

/// Storage of idempotency records. Every method is one request to the backing store.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Writes `record` (status `INPROGRESS`) unless a live record (`expires_at > now`) holds
    /// its key; an expired one is overwritten. Refused, it returns the record that holds the
    /// key, from the same request.
    async fn acquire(
        &self,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Acquired, IdempotencyError>;

    /// Replaces the `INPROGRESS` record written with `record.lock_id` by `record` (status
    /// `COMPLETED`, with its response); [`IdempotencyError::LockLost`] if the stored record is
    /// not that lock any more, [`IdempotencyError::TooLarge`] if it cannot hold `record`.
    async fn complete(&self, record: &IdempotencyRecord) -> Result<(), IdempotencyError>;

    /// Deletes the `INPROGRESS` record written with `lock_id`; [`IdempotencyError::LockLost`]
    /// (deleting nothing) if the stored record is not that lock any more.
    async fn release(&self, record_key: &str, lock_id: &str) -> Result<(), IdempotencyError>;

    /// The stored record, live or expired (for tests and operations; the engine never reads).
    async fn get(&self, record_key: &str) -> Result<Option<IdempotencyRecord>, IdempotencyError>;
}

/// One store shared by many engines is a store too.
#[async_trait]
impl<T: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<T> {
    async fn acquire(
        &self,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Acquired, IdempotencyError> {
        (**self).acquire(record, now).await
    }

    async fn complete(&self, record: &IdempotencyRecord) -> Result<(), IdempotencyError> {
        (**self).complete(record).await
    }

    async fn release(&self, record_key: &str, lock_id: &str) -> Result<(), IdempotencyError> {
        (**self).release(record_key, lock_id).await
    }

    async fn get(&self, record_key: &str) -> Result<Option<IdempotencyRecord>, IdempotencyError> {
        (**self).get(record_key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        for ok in [
            "a",
            "~",
            "!",
            "550e8400-e29b-41d4-a716-446655440000",
            "a#b/c:d",
        ] {
            assert_eq!(validate_key(ok).expect("valid").as_str(), ok);
        }
        assert!(validate_key(&"k".repeat(255)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(256),
            "has space".into(),
            "tab\there".into(),
            "new\nline".into(),
            "nul\0".into(),
            "del\u{7f}".into(),
            "ünïcode".into(),
            " leading".into(),
        ] {
            assert!(
                matches!(validate_key(&bad), Err(IdempotencyError::Invalid(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn record_keys_separate_tenants_actors_and_ambiguous_joins() {
        let key = |k: &str| validate_key(k).expect("valid");
        let a = Scope::new("acme", "alice").record_key(&key("k1"));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, Scope::new("acme", "alice").record_key(&key("k1")));
        assert_ne!(a, Scope::new("acme", "bob").record_key(&key("k1")));
        assert_ne!(a, Scope::new("other", "alice").record_key(&key("k1")));
        assert_ne!(a, Scope::new("acme", "alice").record_key(&key("k2")));
        // A plain "#"-join would make these two the same record.
        assert_ne!(
            Scope::new("t", "a#b").record_key(&key("c")),
            Scope::new("t", "a").record_key(&key("b#c"))
        );
    }

    #[test]
    fn payload_hash_ignores_whitespace_and_key_order_but_not_values() {
        let h = |body: &str| payload_hash("POST", "/api/v1/events/commands", body.as_bytes());
        let base = h(r#"{"type":"AddItem","data":{"sku":"book","quantity":2},"list":[1,2]}"#);
        assert_eq!(base.as_str().len(), 64);
        assert_eq!(
            base,
            h(
                "{ \"list\" : [ 1 , 2 ],\n  \"data\": {\"quantity\": 2, \"sku\": \"book\"},\t\"type\": \"AddItem\" }\n"
            )
        );
        assert_ne!(
            base,
            h(r#"{"type":"AddItem","data":{"sku":"book","quantity":3},"list":[1,2]}"#)
        );
        assert_ne!(
            base,
            h(r#"{"type":"AddItem","data":{"sku":"book","quantity":2},"list":[2,1]}"#),
            "array order is data"
        );
        assert_ne!(
            base,
            h(r#"{"type":"AddItem","data":{"sku":"book","quantity":"2"},"list":[1,2]}"#)
        );
        // Method (case-insensitively) and route are part of the request.
        let body = br#"{"a":1}"#;
        assert_eq!(
            payload_hash("post", "/x", body),
            payload_hash("POST", "/x", body)
        );
        assert_ne!(
            payload_hash("PUT", "/x", body),
            payload_hash("POST", "/x", body)
        );
        assert_ne!(
            payload_hash("POST", "/y", body),
            payload_hash("POST", "/x", body)
        );
        // Not JSON: the bytes count, exactly.
        assert_eq!(
            payload_hash("POST", "/x", b"{oops"),
            payload_hash("POST", "/x", b"{oops")
        );
        assert_ne!(
            payload_hash("POST", "/x", b"{oops"),
            payload_hash("POST", "/x", b"{oops ")
        );
        assert_eq!(
            payload_hash("POST", "/x", b""),
            payload_hash("POST", "/x", b"  \n")
        );
        assert_ne!(
            payload_hash("POST", "/x", b""),
            payload_hash("POST", "/x", b"null")
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_escapes_strings() {
        let v = json!({"b": {"z": 1, "a": [{"y": null, "x": true}]}, "a": "q\"\n✓", "é": 1.5});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"q\"\n✓","b":{"a":[{"x":true,"y":null}],"z":1},"é":1.5}"#
        );
        let reparsed: Value = serde_json::from_str(&canonical_json(&v)).expect("valid JSON");
        assert_eq!(reparsed, v);
    }

    #[test]
    fn statuses_spell_as_stored() {
        for s in [Status::InProgress, Status::Completed] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::InProgress.as_str(), "INPROGRESS");
        assert_eq!(Status::parse("DONE"), None);
    }

    #[test]
    fn manual_clocks_move_only_when_told_and_share_time() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(chrono::Duration::seconds(5));
        assert_eq!(clock.now(), start + chrono::Duration::seconds(5));
        clock.set(start);
        assert_eq!(other.now(), start);
    }
}
