//! Personal data in events: the [`Personal`] wrapper that declares a field personal, and the
//! JSON passes that seal it before storage and open it after ([`seal`], [`open`]).
//!
//! **Why a wrapper type.** An event type says which of its fields are personal by their type
//! (`name: Personal<String>`), tied to the data subject they are about. That survives every
//! refactoring an attribute list would miss, and keeps `decide`/`evolve` pure: they see the
//! plaintext (or [`Personal::Redacted`]) and never a key. Encryption happens at the storage
//! boundary ([`crate::sealing::SealingStore`]) on the JSON the executor already produces, so
//! no aggregate, upcaster or view changes to gain it.
//!
//! **Shapes** (stable, documented in the README):
//!
//! | shape | where | meaning |
//! |---|---|---|
//! | `{"$personal": {"subject": S, "value": V}}` | in memory, API answers | plaintext of subject `S` |
//! | `{"$sealed": {"subject": S, "kid": K, "nonce": N, "ct": C}}` | events table, snapshots, SNS/SQS, dead letters | AES-256-GCM of `V` under `S`'s data key `K` |
//! | `{"$redacted": true}` | wherever the key is gone | the value was forgotten |
//!
//! A `$sealed` value deserializes as [`Personal::Redacted`] too: a consumer that never asks
//! for keys (the saga) folds the same events and simply does not see the personal fields.
//! A [`Personal<String>`] shown as text reads [`REDACTED_TEXT`] once forgotten.
//!
//! **The cipher.** AES-256-GCM (RustCrypto's `aes-gcm`), a fresh 96-bit random nonce per
//! value (a data key seals at most a subject's own values, far below the 2^32 values a
//! random-nonce key may seal), and the additional data `{tenant}/{subject}`, so a sealed
//! value copied into another tenant's or subject's event does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Key of the plaintext shape.
pub const PERSONAL_TAG: &str = "$personal";
/// Key of the sealed shape.
pub const SEALED_TAG: &str = "$sealed";
/// Key of the redaction marker (`{"$redacted": true}`).
pub const REDACTED_TAG: &str = "$redacted";
/// What a forgotten text reads as wherever it is shown (views, exports).
pub const REDACTED_TEXT: &str = "[forgotten]";

/// A personal value of one data subject, or the marker that it was forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal<T> {
    /// The value, about `subject` (a subject id of the event's tenant, e.g. a customer id).
    Known {
        /// The data subject the value is about: whose key seals it.
        subject: String,
        /// The plaintext.
        value: T,
    },
    /// The subject's key is gone (or this reader does not open sealed values).
    Redacted,
}

impl<T> Personal<T> {
    /// `value`, personal data of `subject`.
    pub fn new(subject: impl Into<String>, value: T) -> Self {
        Self::Known {
            subject: subject.into(),
            value,
        }
    }

    /// The plaintext, unless redacted.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Known { value, .. } => Some(value),
            Self::Redacted => None,
        }
    }

    /// Whether the value was forgotten (or not opened).
    pub fn is_redacted(&self) -> bool {
        matches!(self, Self::Redacted)
    }
}

impl<T: AsRef<str>> Personal<T> {
    /// The text to show: the value, or [`REDACTED_TEXT`].
    pub fn shown(&self) -> &str {
        self.value().map_or(REDACTED_TEXT, |v| v.as_ref())
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Inner<'a, T> {
            subject: &'a str,
            value: &'a T,
        }
        let mut map = BTreeMap::new();
        match self {
            Self::Known { subject, value } => {
                let inner = Inner { subject, value };
                map.insert(
                    PERSONAL_TAG,
                    serde_json::to_value(inner).map_err(serde::ser::Error::custom)?,
                );
            }
            Self::Redacted => {
                map.insert(REDACTED_TAG, Value::Bool(true));
            }
        }
        map.serialize(serializer)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Inner {
            subject: String,
            value: Value,
        }
        let mut map = Map::<String, Value>::deserialize(deserializer)?;
        if let Some(inner) = map.remove(PERSONAL_TAG) {
            let inner: Inner = serde_json::from_value(inner).map_err(serde::de::Error::custom)?;
            let value = serde_json::from_value(inner.value).map_err(serde::de::Error::custom)?;
            return Ok(Self::Known {
                subject: inner.subject,
                value,
            });
        }
        if map.contains_key(REDACTED_TAG) || map.contains_key(SEALED_TAG) {
            return Ok(Self::Redacted);
        }
        Err(serde::de::Error::custom(format!(
            "a personal value is {{\"{PERSONAL_TAG}\": ..}}, {{\"{SEALED_TAG}\": ..}} or {{\"{REDACTED_TAG}\": true}}"
        )))
    }
}

/// A subject's data key: 32 bytes of AES-256 key and the id that names this key (a subject
/// has one key for life; the id lets a reader tell a key from a later one, never reused).
#[derive(Clone)]
pub struct DataKey {
    /// Names the key in sealed values (`kid`).
    pub id: String,
    material: Arc<[u8; 32]>,
}

impl DataKey {
    /// A key named `id` with `material`.
    pub fn new(id: impl Into<String>, material: [u8; 32]) -> Self {
        Self {
            id: id.into(),
            material: Arc::new(material),
        }
    }

    /// The key bytes (for wrapping by a key service).
    pub fn material(&self) -> &[u8; 32] {
        &self.material
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, even in a debug log.
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.material == other.material
    }
}

/// Why a value could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A personal shape without a usable subject.
    #[error("malformed personal value: {0}")]
    Malformed(String),
    /// No key was given for a subject the JSON names (a bug of the caller).
    #[error("no data key for subject {0}")]
    NoKey(String),
    /// The cipher refused (cannot happen with a valid key; kept an error, never a panic).
    #[error("encryption failed")]
    Cipher,
}

fn personal_subject(map: &Map<String, Value>) -> Option<Option<&str>> {
    if map.len() != 1 {
        return None;
    }
    let inner = map.get(PERSONAL_TAG)?;
    Some(inner.get("subject").and_then(Value::as_str))
}

fn sealed_parts(map: &Map<String, Value>) -> Option<&Map<String, Value>> {
    if map.len() != 1 {
        return None;
    }
    map.get(SEALED_TAG)?.as_object()
}

fn walk(value: &Value, visit: &mut impl FnMut(&Map<String, Value>) -> bool) {
    match value {
        Value::Object(map) => {
            if visit(map) {
                return;
            }
            map.values().for_each(|v| walk(v, visit));
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, visit)),
        _ => {}
    }
}

fn walk_mut(
    value: &mut Value,
    visit: &mut impl FnMut(&mut Value) -> Option<Result<(), SealError>>,
) -> Result<(), SealError> {
    if let Some(done) = visit(value) {
        return done;
    }
    match value {
        Value::Object(map) => map.values_mut().try_for_each(|v| walk_mut(v, visit)),
        Value::Array(items) => items.iter_mut().try_for_each(|v| walk_mut(v, visit)),
        _ => Ok(()),
    }
}

/// The subjects whose plaintext `value` holds (what [`seal`] needs keys for).
pub fn plaintext_subjects(value: &Value, into: &mut BTreeSet<String>) {
    walk(value, &mut |map| match personal_subject(map) {
        Some(subject) => {
            // A value without a subject gets no key: sealing refuses it (malformed).
            if let Some(subject) = subject.filter(|s| !s.is_empty()) {
                into.insert(subject.to_owned());
            }
            true
        }
        None => false,
    });
}

/// The `(subject, key id)` pairs of the sealed values in `value` (what [`open`] needs keys for).
pub fn sealed_keys(value: &Value, into: &mut BTreeSet<(String, String)>) {
    walk(value, &mut |map| match sealed_parts(map) {
        Some(parts) => {
            let field = |k: &str| {
                parts
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            into.insert((field("subject"), field("kid")));
            true
        }
        None => false,
    });
}

fn aad(tenant: &str, subject: &str) -> String {
    format!("{tenant}/{subject}")
}

/// Replaces every plaintext shape in `value` by its sealed shape, with the keys of `keys`
/// (subject → key); `tenant` binds each ciphertext to the tenant it belongs to.
pub fn seal(
    value: &mut Value,
    tenant: &str,
    keys: &BTreeMap<String, DataKey>,
) -> Result<(), SealError> {
    walk_mut(value, &mut |v| {
        let Value::Object(map) = v else { return None };
        let subject = personal_subject(map)?;
        let sealed = seal_one(map, subject, tenant, keys);
        Some(sealed.map(|sealed| *v = sealed))
    })
}

/// The sealed shape of one plaintext shape `map` about `subject`.
fn seal_one(
    map: &Map<String, Value>,
    subject: Option<&str>,
    tenant: &str,
    keys: &BTreeMap<String, DataKey>,
) -> Result<Value, SealError> {
    let subject = subject
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SealError::Malformed("no subject".into()))?;
    let key = keys
        .get(subject)
        .ok_or_else(|| SealError::NoKey(subject.to_owned()))?;
    let plain = map
        .get(PERSONAL_TAG)
        .and_then(|inner| inner.get("value"))
        .ok_or_else(|| SealError::Malformed(format!("no value for subject {subject}")))?;
    let plain = serde_json::to_vec(plain).map_err(|e| SealError::Malformed(e.to_string()))?;
    let nonce: [u8; 12] = rand::random();
    let cipher = Aes256Gcm::new_from_slice(key.material()).map_err(|_| SealError::Cipher)?;
    let aad = aad(tenant, subject);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SealError::Cipher)?;
    Ok(serde_json::json!({SEALED_TAG: {
        "subject": subject,
        "kid": key.id,
        "nonce": B64.encode(nonce),
        "ct": B64.encode(ct),
    }}))
}

/// What [`open`] did to one value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Values opened to plaintext.
    pub opened: usize,
    /// Values turned into the redaction marker (key gone, or not opening).
    pub redacted: usize,
}

/// Replaces every sealed shape in `value` by its plaintext shape when `keys` has the key it
/// names (`(subject, kid)` → key), else by the redaction marker. A value that does not
/// decrypt under its key (tampered, moved to another tenant or subject) reads as redacted
/// too: a reader never fails on someone's personal field.
pub fn open(value: &mut Value, tenant: &str, keys: &BTreeMap<(String, String), DataKey>) -> Opened {
    let mut opened = Opened::default();
    let _ = walk_mut(value, &mut |v| {
        let Value::Object(map) = v else { return None };
        let parts = sealed_parts(map)?;
        let field = |k: &str| parts.get(k).and_then(Value::as_str).unwrap_or_default();
        let subject = field("subject").to_owned();
        let plain = keys
            .get(&(subject.clone(), field("kid").to_owned()))
            .and_then(|key| decrypt(key, tenant, &subject, field("nonce"), field("ct")));
        *v = match plain {
            Some(plain) => {
                opened.opened += 1;
                serde_json::json!({PERSONAL_TAG: {"subject": subject, "value": plain}})
            }
            None => {
                opened.redacted += 1;
                redaction_marker()
            }
        };
        Some(Ok(()))
    });
    opened
}

fn decrypt(key: &DataKey, tenant: &str, subject: &str, nonce: &str, ct: &str) -> Option<Value> {
    let nonce = B64.decode(nonce).ok().filter(|n| n.len() == 12)?;
    let ct = B64.decode(ct).ok()?;
    let cipher = Aes256Gcm::new_from_slice(key.material()).ok()?;
    let aad = aad(tenant, subject);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ct,
                aad: aad.as_bytes(),
            },
        )
        .ok()?;
    serde_json::from_slice(&plain).ok()
}

/// `{"$redacted": true}`.
pub fn redaction_marker() -> Value {
    serde_json::json!({REDACTED_TAG: true})
}

/// Replaces every plaintext shape in `value` by the redaction marker: for answers that are
/// stored (the idempotency store records a command's answer) and must not keep plaintext.
pub fn withhold(value: &mut Value) {
    let _ = walk_mut(value, &mut |v| {
        let Value::Object(map) = v else { return None };
        personal_subject(map)?;
        *v = redaction_marker();
        Some(Ok(()))
    });
}

/// Whether `value` holds any sealed shape (a reader that needs plaintext must open it).
pub fn has_sealed(value: &Value) -> bool {
    let mut found = false;
    walk(value, &mut |map| {
        found |= sealed_parts(map).is_some();
        found
    });
    found
}

/// Whether `value` holds any plaintext shape.
pub fn has_plaintext(value: &Value) -> bool {
    let mut found = false;
    walk(value, &mut |map| {
        found |= personal_subject(map).is_some();
        found
    });
    found
}
