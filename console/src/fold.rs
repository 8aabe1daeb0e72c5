//! Time travel: a registered aggregate's state at any version, folded from its events as the
//! command path folds them (upcasters first, then the aggregate's `evolve`).

use eventfold::aggregate::DomainEvent;
use eventfold::{Aggregate, EventEnvelope};
use serde_json::Value;
use shop::registry::{AggregateVisitor, RegisteredAggregate};

/// Why a state could not be folded.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// The category is not an aggregate of the registry.
    #[error(transparent)]
    Unknown(#[from] shop::registry::UnknownAggregate),
    /// An event does not decode as the aggregate's.
    #[error("event v{version} ({event_type}) does not decode: {message}")]
    Decode {
        /// Its version.
        version: u64,
        /// Its type.
        event_type: String,
        /// What the codec said.
        message: String,
    },
    /// The state does not serialize.
    #[error("state not serializable: {0}")]
    Encode(#[from] serde_json::Error),
}

struct StateAt<'a> {
    events: &'a [EventEnvelope],
    version: u64,
}

impl AggregateVisitor for StateAt<'_> {
    type Output = Result<Value, FoldError>;
    fn visit<A: RegisteredAggregate>(self) -> Self::Output {
        let upcasters = shop::registry::upcasters();
        let mut state = A::initial();
        for e in self.events.iter().filter(|e| e.version <= self.version) {
            let e = upcasters.upcast_envelope(e.clone());
            let event = <A as Aggregate>::Event::decode(&e.event_type, &e.data).map_err(|err| {
                FoldError::Decode {
                    version: e.version,
                    event_type: e.event_type.clone(),
                    message: err.to_string(),
                }
            })?;
            state = A::evolve(state, &event);
        }
        Ok(serde_json::to_value(state)?)
    }
}

/// The state of an aggregate of `category` after the `events` up to `version` (oldest first).
pub fn state_at(
    category: &str,
    events: &[EventEnvelope],
    version: u64,
) -> Result<Value, FoldError> {
    shop::registry::visit(category, StateAt { events, version })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold::{Metadata, NewEvent, StreamId};

    fn event(stream: &StreamId, version: u64, t: &str, data: Value) -> EventEnvelope {
        NewEvent {
            event_type: t.into(),
            schema_version: 1,
            data,
        }
        .into_envelope(
            stream,
            version,
            chrono::Utc::now(),
            Metadata::root("acme", "dev", "c"),
        )
    }

    #[test]
    fn the_state_at_an_old_version_ignores_later_events() {
        let s = StreamId::new("acme", "Inventory", "sku-1").expect("valid");
        let events = vec![
            event(&s, 1, "StockReceived", serde_json::json!({"quantity": 5})),
            event(&s, 2, "StockReceived", serde_json::json!({"quantity": 7})),
        ];
        let at1 = state_at("Inventory", &events, 1).expect("folds");
        let at2 = state_at("Inventory", &events, 2).expect("folds");
        assert_eq!(at1["on_hand"], 5, "{at1}");
        assert_eq!(at2["on_hand"], 12, "{at2}");
        assert!(matches!(
            state_at("Nope", &events, 1),
            Err(FoldError::Unknown(_))
        ));
    }
}
