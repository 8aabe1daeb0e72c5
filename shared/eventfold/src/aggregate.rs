//! The one shape every aggregate takes: `initial` → `evolve` → `decide`.

use crate::envelope::NewEvent;
use serde::{Serialize, de::DeserializeOwned};
use std::borrow::Cow;
use std::fmt::Debug;

/// A business rule said no. Carries the rule's stable name so callers (HTTP: 422) can branch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {message}")]
pub struct Rejection {
    /// Stable, kebab-case name of the rule that failed, e.g. `order-not-empty`.
    pub rule: Cow<'static, str>,
    /// Human-readable explanation.
    pub message: String,
}

impl Rejection {
    /// A rejection by `rule`, explained by `message`.
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule: Cow::Borrowed(rule),
            message: message.into(),
        }
    }
}

/// Why stored data could not be turned into a domain event (or back).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The event enum does not serialize as `{"type": .., "data": ..}`.
    #[error("event does not serialize as an adjacently tagged enum (type/data)")]
    NotTagged,
    /// Serde refused the payload.
    #[error("event '{event_type}' could not be decoded: {source}")]
    Serde {
        /// The stored event type.
        event_type: String,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// An aggregate's event enum. Events are the storage format, so they are serde enums tagged
/// `#[serde(tag = "type", content = "data")]`; the provided methods split and join that shape.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// Current schema version of `event_type` (what `encode` writes and upcasters lift to).
    fn schema_version(_event_type: &str) -> u32 {
        1
    }

    /// Splits the event into its stored parts.
    fn encode(&self) -> Result<NewEvent, CodecError> {
        let value = serde_json::to_value(self).map_err(|_| CodecError::NotTagged)?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(CodecError::NotTagged);
        };
        let Some(serde_json::Value::String(event_type)) = map.remove("type") else {
            return Err(CodecError::NotTagged);
        };
        let data = map.remove("data").unwrap_or(serde_json::Value::Null);
        Ok(NewEvent {
            schema_version: Self::schema_version(&event_type),
            event_type,
            data,
        })
    }

    /// Joins stored parts (already upcast to the current schema) into the event.
    fn decode(event_type: &str, data: &serde_json::Value) -> Result<Self, CodecError> {
        let mut map = serde_json::Map::new();
        map.insert("type".into(), serde_json::Value::String(event_type.into()));
        if !data.is_null() {
            map.insert("data".into(), data.clone());
        }
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|source| CodecError::Serde {
            event_type: event_type.to_owned(),
            source,
        })
    }
}

/// An event-sourced decision maker. Pure and synchronous: all I/O happens before `decide`.
pub trait Aggregate: 'static {
    /// Stream category, e.g. `Order` (stream ids are `{tenant}/{CATEGORY}-{id}`).
    const CATEGORY: &'static str;
    /// Version of the serialized `State`; bump it when the state's shape changes so that
    /// snapshots taken under the old shape are ignored (full replay) instead of misread.
    const STATE_SCHEMA: u32 = 1;

    /// Past-tense facts; the storage format.
    type Event: DomainEvent + Clone + Debug + PartialEq + Send + Sync;
    /// What the aggregate knows, folded from its events.
    type State: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// What callers ask for.
    type Command: Debug + Send + Sync;

    /// The state of a stream with no events.
    fn initial() -> Self::State;
    /// The state after one more event.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// The events that carry out `command`, or the rule it breaks. An empty list means
    /// "already done" and is how redelivered commands stay harmless.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// Folds events onto a state.
    fn fold<'a>(
        state: Self::State,
        events: impl IntoIterator<Item = &'a Self::Event>,
    ) -> Self::State {
        events.into_iter().fold(state, Self::evolve)
    }
}
