//! Upcasters: lift events written under an old schema to the current one at read time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

type Step = Arc<dyn Fn(serde_json::Value) -> serde_json::Value + Send + Sync>;

/// Registry of one-step upcasters keyed by (event type, schema version they read).
///
/// Reading applies steps `v -> v+1 -> ...` until no step is registered, so each schema
/// change adds one small function and old events load through the whole chain.
#[derive(Clone, Default)]
pub struct Upcasters {
    // Event type -> schema version read -> step; keyed by type first so that a lookup borrows
    // the stored event type instead of allocating a key per event read.
    steps: HashMap<String, HashMap<u32, Step>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<(&String, &u32)> = self
            .steps
            .iter()
            .flat_map(|(t, versions)| versions.keys().map(move |v| (t, v)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters: every event is read as written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step that turns `event_type` data of schema `from` into schema `from + 1`.
    pub fn register(
        mut self,
        event_type: &str,
        from: u32,
        step: impl Fn(serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .entry(event_type.to_owned())
            .or_default()
            .insert(from, Arc::new(step));
        self
    }

    /// True when no step is registered at all: every event reads as written.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// True when no step applies to `event_type` at `schema_version`: its data reads as
    /// written, without a copy.
    pub fn is_current(&self, event_type: &str, schema_version: u32) -> bool {
        self.steps
            .get(event_type)
            .is_none_or(|versions| !versions.contains_key(&schema_version))
    }

    /// `event` with its data lifted as far as registered steps go (and its schema version set
    /// to where they end).
    pub fn upcast_envelope(&self, mut event: crate::EventEnvelope) -> crate::EventEnvelope {
        let (data, schema) = self.upcast(&event.event_type, event.schema_version, event.data);
        event.data = data;
        event.schema_version = schema;
        event
    }

    /// [`Self::upcast`] on borrowed data: borrowed back when no step applies, so the common
    /// case (an event written under the current schema) costs no copy.
    pub fn upcast_ref<'a>(
        &self,
        event_type: &str,
        schema_version: u32,
        data: &'a serde_json::Value,
    ) -> (Cow<'a, serde_json::Value>, u32) {
        if self.is_current(event_type, schema_version) {
            return (Cow::Borrowed(data), schema_version);
        }
        let (data, version) = self.upcast(event_type, schema_version, data.clone());
        (Cow::Owned(data), version)
    }

    /// Lifts `data` of `event_type` written at `schema_version` as far as registered steps go;
    /// returns the data and the schema version it ends at.
    pub fn upcast(
        &self,
        event_type: &str,
        mut schema_version: u32,
        mut data: serde_json::Value,
    ) -> (serde_json::Value, u32) {
        let Some(versions) = self.steps.get(event_type) else {
            return (data, schema_version);
        };
        while let Some(step) = versions.get(&schema_version) {
            data = step(data);
            schema_version += 1;
        }
        (data, schema_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_steps_to_the_latest_schema() {
        let up = Upcasters::new()
            .register("ItemAdded", 1, |mut d| {
                d["unit_price"] = d["price"].take();
                d
            })
            .register("ItemAdded", 2, |mut d| {
                d["currency"] = json!("EUR");
                d
            });
        let (data, v) = up.upcast("ItemAdded", 1, json!({"sku": "a", "price": 5}));
        assert_eq!(v, 3);
        assert_eq!(
            data,
            json!({"sku": "a", "price": null, "unit_price": 5, "currency": "EUR"})
        );
        let (same, v2) = up.upcast("ItemAdded", 3, json!({"x": 1}));
        assert_eq!((same, v2), (json!({"x": 1}), 3));
        let (other, v3) = up.upcast("OrderPlaced", 1, json!({}));
        assert_eq!((other, v3), (json!({}), 1));
        let old = json!({"sku": "a", "price": 5});
        let (lifted, v4) = up.upcast_ref("ItemAdded", 1, &old);
        assert!(matches!(lifted, Cow::Owned(_)));
        assert_eq!(
            (lifted.into_owned(), v4),
            up.upcast("ItemAdded", 1, old.clone())
        );
        let (as_written, v5) = up.upcast_ref("ItemAdded", 3, &old);
        assert!(matches!(as_written, Cow::Borrowed(d) if *d == old));
        assert_eq!(v5, 3);
        assert!(up.is_current("OrderPlaced", 1) && !up.is_current("ItemAdded", 2));
        assert!(!up.is_empty() && Upcasters::new().is_empty());
    }
}
