//! How big the snapshots the executor takes are, and the warning before they cannot be stored.
//!
//! A snapshot rides in the commit that crosses each multiple of `snapshot_every`, and a commit
//! is one store write (DynamoDB: one item of at most 400 KB). Every snapshot's serialized size
//! is recorded ([`SNAPSHOT_BYTES`], a histogram labelled by aggregate category, and
//! [`crate::CommandOutcome::snapshot_bytes`]) and past [`SNAPSHOT_WARN_BYTES`] a warning names
//! the stream, long before the limit: a state that keeps growing is a design bug to fix while
//! commands still work. A commit that cannot fit is the store's to refuse before it writes
//! ([`crate::StoreError::TooLarge`], naming the stream). A store whose limit the *snapshot*
//! would break drops the snapshot and writes the events (a snapshot is only an optimisation;
//! the DynamoDB store does so and warns), so a big state costs longer loads, never a refused
//! command.

use crate::aggregate::Aggregate;
use crate::envelope::StreamId;
use crate::executor::CommandError;
use crate::store::Snapshot;

/// The histogram of snapshot sizes, in bytes of serialized JSON, labelled `category` (the
/// aggregate's stream category): one value per snapshot the executor takes.
pub const SNAPSHOT_BYTES: &str = "snapshot_bytes";

/// Past this size (bytes of serialized JSON) a snapshot is logged as a warning naming the
/// stream: half of DynamoDB's 400 KB item, so that a growing state is noticed while its
/// commits still fit (the shop's states stay under 64 KB, `docs/state-size.md`).
pub const SNAPSHOT_WARN_BYTES: usize = 200 * 1024;

/// A state that could not be written into a snapshot (its `Serialize` failed).
#[derive(Debug, thiserror::Error)]
#[error("state not serializable")]
struct StateNotSerializable(#[source] serde_json::Error);

/// The snapshot of `state`, `A`'s at `version` of `stream`, and its size (measured).
pub(crate) fn take<A: Aggregate>(
    stream: &StreamId,
    version: u64,
    state: &A::State,
) -> Result<(Snapshot, usize), CommandError> {
    let state = serde_json::to_value(state)
        .map_err(|e| CommandError::Internal(Box::new(StateNotSerializable(e))))?;
    let bytes = measure(stream, A::CATEGORY, version, &state);
    let snapshot = Snapshot {
        version,
        state_schema: A::STATE_SCHEMA,
        state,
    };
    Ok((snapshot, bytes))
}

/// Measures the snapshot `state` of `stream` (an aggregate of `category`) at `version`:
/// records it and warns past the threshold. Returns its size.
fn measure(
    stream: &StreamId,
    category: &'static str,
    version: u64,
    state: &serde_json::Value,
) -> usize {
    let bytes = json_len(state);
    metrics::histogram!(SNAPSHOT_BYTES, "category" => category).record(bytes as f64);
    if bytes > SNAPSHOT_WARN_BYTES {
        tracing::warn!(
            stream_id = %stream,
            snapshot_bytes = bytes,
            threshold = SNAPSHOT_WARN_BYTES,
            version,
            "snapshot large: the state grows toward the store's item limit"
        );
    }
    bytes
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    /// Counts what a serializer writes.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, nor can serializing a `Value`.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}
