//! The message every consumer reads: "stream `s` has an event at version `v`", with the event
//! unless it was too large for the bus. The table is the truth; a notification only says "look".

use eventfold::{EventEnvelope, EventStore, StoreError, StreamId, StreamIdError, Upcasters};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a notification cannot be used ([`Notification::checked_stream`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// It names no valid stream.
    #[error(transparent)]
    Stream(#[from] StreamIdError),
    /// The event it carries is not the one it announces.
    #[error("carried event {carried} does not match {announced}")]
    Mismatch {
        /// `{stream_id}@{version}` of the carried event.
        carried: String,
        /// `{stream_id}@{version}` the notification announces.
        announced: String,
    },
}

/// What the bus carries: "stream `stream_id` has an event at `version`", with the event
/// itself unless it was too large for the bus (a thin notification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Source stream.
    pub stream_id: String,
    /// Version of the event in its stream.
    pub version: u64,
    /// The event's id (the bus's dedup key).
    pub event_id: Uuid,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Tenant of the stream.
    pub tenant: String,
    /// Category of the stream (e.g. `Order`).
    pub category: String,
    /// The full event; `None` when thin (read it from the event store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventEnvelope>,
}

impl Notification {
    /// The stream it names, provided the event it carries (if any) is the one it announces;
    /// else why the notification is unusable.
    pub fn checked_stream(&self) -> Result<StreamId, NotificationError> {
        let stream = StreamId::parse(&self.stream_id)?;
        if let Some(e) = &self.event
            && (e.stream_id != self.stream_id || e.version != self.version)
        {
            return Err(NotificationError::Mismatch {
                carried: format!("{}@{}", e.stream_id, e.version),
                announced: format!("{}@{}", self.stream_id, self.version),
            });
        }
        Ok(stream)
    }

    /// Events `from..=to` of its stream, upcast: the carried event when it is exactly the one
    /// needed, else read from `store` (a gap, or a thin notification), counting the events
    /// read into `read`. `None` when the store does not (yet) hold all of them.
    pub(crate) async fn events_between(
        &self,
        store: &(impl EventStore + ?Sized),
        upcasters: &Upcasters,
        (from, to): (u64, u64),
        read: &mut usize,
    ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        let raw = match &self.event {
            Some(e) if from == to && e.version == to => vec![e.clone()],
            _ => {
                let got = store
                    .load_range(&self.stream_id, from, Some(to), None)
                    .await?;
                *read += got.len();
                got
            }
        };
        let contiguous = raw.len() as u64 == to + 1 - from
            && raw
                .iter()
                .enumerate()
                .all(|(i, e)| e.version == from + i as u64);
        if !contiguous {
            return Ok(None);
        }
        Ok(Some(
            raw.into_iter()
                .map(|e| upcasters.upcast_envelope(e))
                .collect(),
        ))
    }

    /// A full notification for `event`.
    pub fn of(event: &EventEnvelope) -> Result<Self, StreamIdError> {
        let stream = StreamId::parse(&event.stream_id)?;
        Ok(Self {
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            tenant: stream.tenant().to_owned(),
            category: stream.category().to_owned(),
            event: Some(event.clone()),
        })
    }

    /// The same notification without the event payload.
    pub fn thin(mut self) -> Self {
        self.event = None;
        self
    }
}
