//! The one shape every aggregate takes: `initial` → `evolve` → `decide`.

use crate::envelope::NewEvent;
use serde::de::value::BorrowedStrDeserializer;
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

    /// Joins stored parts (already upcast to the current schema) into the event. The data is
    /// read where it lies, tag first, so decoding neither copies nor buffers it.
    fn decode(event_type: &str, data: &serde_json::Value) -> Result<Self, CodecError> {
        Self::deserialize(Tagged {
            event_type,
            data: (!data.is_null()).then_some(data),
        })
        .map_err(|source| CodecError::Serde {
            event_type: event_type.to_owned(),
            source,
        })
    }
}

/// The stored parts of an event seen as the map `{"type": .., "data": ..}`, tag first and
/// borrowing the data: serde's adjacently tagged enums then read the variant before its
/// content and deserialize the content straight from the borrowed JSON. (Through a
/// `serde_json::Map` the keys come sorted, `data` before `type`, which makes serde buffer the
/// content and costs a copy of the data besides.)
struct Tagged<'a> {
    event_type: &'a str,
    data: Option<&'a serde_json::Value>,
}

impl<'de> serde::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_map(TaggedEntries {
            tagged: self,
            read: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The entries of a [`Tagged`]: `type`, then `data` when there is any.
struct TaggedEntries<'a> {
    tagged: Tagged<'a>,
    /// Values handed out so far.
    read: u8,
}

impl<'de> serde::de::MapAccess<'de> for TaggedEntries<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match (self.read, self.tagged.data) {
            (0, _) => "type",
            (1, Some(_)) => "data",
            _ => return Ok(None),
        };
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.read += 1;
        match (self.read, self.tagged.data) {
            (1, _) => seed.deserialize(BorrowedStrDeserializer::new(self.tagged.event_type)),
            (_, Some(data)) => seed.deserialize(data),
            (_, None) => Err(serde::de::Error::custom("no value left")),
        }
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

    /// [`Self::evolve`] with an event the caller no longer needs (a replay decodes each
    /// stored event for the fold alone): an aggregate may move the event's data into the
    /// state instead of copying it. Must give the state `evolve` gives; by default it is
    /// `evolve`.
    fn evolve_owned(state: Self::State, event: Self::Event) -> Self::State {
        Self::evolve(state, &event)
    }
    /// The events that carry out `command`, or the rule it breaks. An empty list means
    /// "already done" and is how redelivered commands stay harmless.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// True when `command` is normally the first of its stream (`CreateOrder`, say): with no
    /// cached state, the executor then decides on [`Self::initial`] at version 0 without
    /// reading, and appends; if the stream exists after all, the conditional append fails, and
    /// it reads the stream and decides again. A verdict of "rejected" or "already done" on the
    /// assumed state is always confirmed by a read. So a command that creates a stream costs
    /// one request. Default: never assume.
    fn assume_new(_command: &Self::Command) -> bool {
        false
    }

    /// Folds events onto a state.
    fn fold<'a>(
        state: Self::State,
        events: impl IntoIterator<Item = &'a Self::Event>,
    ) -> Self::State {
        events.into_iter().fold(state, Self::evolve)
    }
}
