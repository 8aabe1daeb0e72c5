//! The storage format of an event and the names of streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Who did what, on whose behalf and why: carried by every event of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Metadata {
    /// Tenant that owns the stream (from the caller's token, never from a request body).
    pub tenant: String,
    /// The authenticated subject that issued the command.
    pub actor: String,
    /// Id shared by everything one original request caused.
    pub correlation_id: String,
    /// Id of the message that directly caused this commit.
    pub causation_id: String,
    /// Id of the command that produced this commit (derived ids make redelivery harmless).
    pub command_id: String,
    /// The X-Ray trace header of the request that caused the commit (`Root=1-...;Parent=...;
    /// Sampled=...`), carried on to every message the commit causes so that one order's path
    /// is one trace. `None` outside a traced invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl Metadata {
    /// The metadata of a command that starts a conversation of its own (an API request, a
    /// tool, a test): its id is also the correlation and the causation.
    pub fn root(
        tenant: impl Into<String>,
        actor: impl Into<String>,
        command_id: impl Into<String>,
    ) -> Self {
        let command_id = command_id.into();
        Self {
            tenant: tenant.into(),
            actor: actor.into(),
            correlation_id: command_id.clone(),
            causation_id: command_id.clone(),
            command_id,
            trace: None,
        }
    }

    /// The same metadata carrying `trace` (an X-Ray trace header) when there is one.
    pub fn with_trace(mut self, trace: Option<String>) -> Self {
        self.trace = trace;
        self
    }
}

/// One stored event, exactly as it is persisted and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique, time-ordered (UUIDv7) id; the dedup key downstream.
    pub event_id: Uuid,
    /// `{tenant}/{Category}-{id}`.
    pub stream_id: String,
    /// 1-based position of the event in its stream.
    pub version: u64,
    /// Past-tense event name, e.g. `ItemAdded`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` as written (upcasters lift old ones).
    pub schema_version: u32,
    /// The event's payload.
    pub data: serde_json::Value,
    /// When the decision was taken.
    pub occurred_at: DateTime<Utc>,
    /// Request context of the commit.
    pub metadata: Metadata,
}

/// An event produced by a decision, before it has a position in a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Past-tense event name.
    pub event_type: String,
    /// Schema version the payload is written in.
    pub schema_version: u32,
    /// The payload.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// Gives the event its place in a stream.
    pub fn into_envelope(
        self,
        stream_id: &StreamId,
        version: u64,
        occurred_at: DateTime<Utc>,
        metadata: Metadata,
    ) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            stream_id: stream_id.to_string(),
            version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            data: self.data,
            occurred_at,
            metadata,
        }
    }
}

/// Why a stream id or one of its parts was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// Tenant empty, too long, with characters outside `[A-Za-z0-9_-]`, or not starting with a
    /// letter or digit (names starting with `_` or `-` are reserved for the system's own rows,
    /// such as the read models' `_cp` checkpoints).
    #[error(
        "invalid tenant '{0}': 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
    )]
    Tenant(String),
    /// Category empty, too long, not starting with a capital or with characters outside `[A-Za-z0-9]`.
    #[error("invalid category '{0}': 1-64 letters or digits, starting with a capital")]
    Category(String),
    /// Id empty, too long or with characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid id '{0}': 1-128 characters of A-Z a-z 0-9 _ . : -")]
    Id(String),
    /// The text is not `{tenant}/{Category}-{id}`.
    #[error("invalid stream id '{0}': expected {{tenant}}/{{Category}}-{{id}}")]
    Shape(String),
}

/// A validated stream name `{tenant}/{Category}-{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    tenant: String,
    category: String,
    id: String,
}

fn valid_tenant(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_category(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_uppercase()
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Longest id of a stream ([`valid_id`]).
pub const MAX_ID_LEN: usize = 128;

/// The one rule for the id part of a stream id: 1 to [`MAX_ID_LEN`] characters of
/// `A-Z a-z 0-9 _ . : -`. Domains whose values become stream ids or keys downstream (an order
/// id, a SKU) check them with it, so what a command accepts always names a stream.
pub fn valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

impl StreamId {
    /// Builds a stream id, validating every part.
    pub fn new(tenant: &str, category: &str, id: &str) -> Result<Self, StreamIdError> {
        if !valid_tenant(tenant) {
            return Err(StreamIdError::Tenant(tenant.to_owned()));
        }
        if !valid_category(category) {
            return Err(StreamIdError::Category(category.to_owned()));
        }
        if !valid_id(id) {
            return Err(StreamIdError::Id(id.to_owned()));
        }
        Ok(Self {
            tenant: tenant.to_owned(),
            category: category.to_owned(),
            id: id.to_owned(),
        })
    }

    /// Checks that `tenant` can own streams (the rule [`Self::new`] applies to the tenant part).
    pub fn check_tenant(tenant: &str) -> Result<(), StreamIdError> {
        if valid_tenant(tenant) {
            Ok(())
        } else {
            Err(StreamIdError::Tenant(tenant.to_owned()))
        }
    }

    /// Parses `{tenant}/{Category}-{id}`; the category ends at the first `-`.
    pub fn parse(text: &str) -> Result<Self, StreamIdError> {
        let shape = || StreamIdError::Shape(text.to_owned());
        let (tenant, rest) = text.split_once('/').ok_or_else(shape)?;
        let (category, id) = rest.split_once('-').ok_or_else(shape)?;
        Self::new(tenant, category, id)
    }

    /// The owning tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    /// The aggregate category, e.g. `Order`.
    pub fn category(&self) -> &str {
        &self.category
    }
    /// The aggregate id within its category.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}-{}", self.tenant, self.category, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_round_trips_and_splits_at_first_dash() {
        let s = StreamId::parse("acme/Order-o-1").expect("valid");
        assert_eq!(s.tenant(), "acme");
        assert_eq!(s.category(), "Order");
        assert_eq!(s.id(), "o-1");
        assert_eq!(s.to_string(), "acme/Order-o-1");
    }

    #[test]
    fn stream_id_rejects_bad_parts() {
        assert!(matches!(
            StreamId::new("a/b", "Order", "1"),
            Err(StreamIdError::Tenant(_))
        ));
        for reserved in ["_cp", "-x", "_due"] {
            assert!(StreamId::check_tenant(reserved).is_err(), "{reserved}");
            assert!(StreamId::new(reserved, "Order", "1").is_err(), "{reserved}");
        }
        assert!(StreamId::check_tenant("acme_1-b").is_ok());
        assert!(matches!(
            StreamId::new("t", "order", "1"),
            Err(StreamIdError::Category(_))
        ));
        assert!(matches!(
            StreamId::new("t", "Order", ""),
            Err(StreamIdError::Id(_))
        ));
        assert!(matches!(
            StreamId::new("t", "Order", "a b"),
            Err(StreamIdError::Id(_))
        ));
        let long = "x".repeat(129);
        assert!(matches!(
            StreamId::new("t", "Order", &long),
            Err(StreamIdError::Id(_))
        ));
        assert!(matches!(
            StreamId::parse("nope"),
            Err(StreamIdError::Shape(_))
        ));
    }
}
