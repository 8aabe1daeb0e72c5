//! Read side: notifications, views, the read-model store port and the projector that applies
//! events exactly once (checkpoint per view and source stream, gap catch-up from the table).
//!
//! The queues only say "look": a notification at version `v` of stream `s` means "the table
//! has `s` up to at least `v`". For each view, a version at or below the checkpoint is a
//! duplicate (acknowledged, no effect); a version past `checkpoint + 1` is a gap, filled by
//! reading the missing versions from the event store first. The view change and the new
//! checkpoint are written together, conditionally on the old checkpoint.
//!
//! A batch of notifications ([`Projector::handle_batch`]) costs one batched read of every
//! (view, stream) state ([`ReadModelStore::get_many`]) and one such write per (view, stream)
//! it changes, with the same effects as handling its notifications one at a time.
//!
//! A view may have several versions at once ([`versions`]): the projector reads the views'
//! pointers once per batch and applies each notification to every active version, each with
//! its own checkpoints.

mod memory;
mod projector;
pub mod versions;

pub use memory::MemoryReadModelStore;
pub(crate) use projector::page_end;
pub use projector::{Applied, CATCH_UP_PAGE, GroupOutcome, ProjectError, Projector};
pub use versions::{PointerError, ViewPointer, stored_name};

use async_trait::async_trait;
use eventfold::Cause;
use eventfold::envelope::EventEnvelope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a view could not take an event ([`StreamView::apply`], [`CounterView::contribution`]):
/// bad data, so the notification is not acknowledged. Keeps the underlying error as its
/// source.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event's stream id is not one.
    #[error(transparent)]
    Stream(#[from] eventfold::StreamIdError),
    /// The data of an event type the view knows does not decode.
    #[error(transparent)]
    Decode(#[from] eventfold::aggregate::CodecError),
    /// A stored document does not read back in the view's shape.
    #[error("stored {view} document is unreadable: {source}")]
    Document {
        /// The view.
        view: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A document does not serialize.
    #[error("{view} document not serializable: {source}")]
    Encode {
        /// The view.
        view: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// The event does not fit the document (e.g. an update of something never created):
    /// the history is not one the view can read.
    #[error("{0}")]
    Invalid(String),
}

/// A projection failed on an event (bad data): the notification is not acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("view {view} cannot apply {event_type} v{version} of {stream_id}: {source}")]
pub struct ViewError {
    /// The view.
    pub view: String,
    /// Source stream.
    pub stream_id: String,
    /// Event version.
    pub version: u64,
    /// Event type.
    pub event_type: String,
    /// Why.
    pub source: ApplyError,
}

/// A view with one document per source stream (e.g. `order-summary` per order). The
/// checkpoint lives in the document, so a change is one conditional write.
pub trait StreamView: Send + Sync {
    /// View name, e.g. `order-summary`.
    fn name(&self) -> &str;
    /// Source category, e.g. `Order`.
    fn category(&self) -> &str;
    /// The document after `event` (`None`: no document for this stream, yet or any more).
    fn apply(&self, doc: Option<Value>, event: &EventEnvelope)
    -> Result<Option<Value>, ApplyError>;
    /// Optional list index of a document: (partition, sort), e.g. (customer, created#order).
    fn index(&self, _doc: &Value) -> Option<(String, String)> {
        None
    }
}

/// What one event adds to a counter view: the document key and counter deltas.
pub type Contribution = Option<(String, BTreeMap<String, i64>)>;

/// A view whose documents sum contributions of many streams (e.g. `daily-sales` per day).
/// Each change adds to counters and moves the (view, stream) checkpoint atomically.
pub trait CounterView: Send + Sync {
    /// View name.
    fn name(&self) -> &str;
    /// Source category.
    fn category(&self) -> &str;
    /// What `event` adds: document key and counter deltas; `None` when it adds nothing.
    fn contribution(&self, event: &EventEnvelope) -> Result<Contribution, ApplyError>;
}

/// A stored read-model document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Key within the view (and tenant).
    pub key: String,
    /// The document.
    pub data: Value,
    /// For stream views: the source stream version applied; 0 for counter views.
    pub checkpoint: u64,
    /// List index (partition, sort) when the view has one.
    pub index: Option<(String, String)>,
}

/// A page request over a view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// With `Some(partition)`, list that index partition (newest sort key first); otherwise
    /// list the view by key.
    pub index: Option<String>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// One page of documents.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// Documents.
    pub docs: Vec<Doc>,
    /// Cursor of the next page, if any.
    pub next: Option<String>,
}

/// Why the read-model store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The checkpoint moved since it was read (another consumer applied the event).
    #[error("checkpoint conflict on {view} {key}")]
    Conflict {
        /// View.
        view: String,
        /// Document key or source stream.
        key: String,
    },
    /// A cursor this store did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The backing service failed; retry later.
    #[error("read-model store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Stored data could not be read.
    #[error("corrupt read model: {0}")]
    Corrupt(String),
    /// The store refused the request as malformed (a key too long, an item too large):
    /// retrying the same request will not help.
    #[error("read-model store refused the request: {0}")]
    Refused(#[source] Cause),
}

/// One item of a batched read ([`ReadModelStore::get_many`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelKey {
    /// The document `key` of `view` for `tenant`, as [`ReadModelStore::get`] reads it (a
    /// stream view's checkpoint lives in its document).
    Doc {
        /// Tenant.
        tenant: String,
        /// View.
        view: String,
        /// Document key.
        key: String,
    },
    /// A counter view's checkpoint for a source stream, as [`ReadModelStore::checkpoint`]
    /// reads it.
    Checkpoint {
        /// View.
        view: String,
        /// Source stream.
        stream_id: String,
    },
    /// The version pointer of a view, as [`ReadModelStore::pointer`] reads it (the projector
    /// reads the pointers with the states they select, in one request).
    Pointer {
        /// View.
        view: String,
    },
}

/// What a batched read found for one [`ModelKey`].
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// For [`ModelKey::Doc`]: the document, if any.
    Doc(Option<Doc>),
    /// For [`ModelKey::Checkpoint`]: the checkpoint (0: nothing applied).
    Checkpoint(u64),
    /// For [`ModelKey::Pointer`]: the pointer ([`ViewPointer::initial`] when none is stored).
    Pointer(ViewPointer),
}

/// Storage of views, per tenant, with conditional checkpointed writes.
#[async_trait]
pub trait ReadModelStore: Send + Sync {
    /// The document `key` of `view` for `tenant`.
    async fn get(&self, tenant: &str, view: &str, key: &str)
    -> Result<Option<Doc>, ReadModelError>;

    /// Writes `doc` (its `checkpoint` is the new one) if the stored checkpoint is `expected`
    /// (0: no document yet). `data: Null` keeps only the checkpoint: the document is hidden
    /// from `list`, and `get` returns it with `Null` data.
    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: Doc,
        expected: u64,
    ) -> Result<(), ReadModelError>;

    /// Checkpoint of a counter view for a source stream (0: nothing applied).
    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError>;

    /// What `get` / `checkpoint` would return for each of `keys`, in their order (a key may
    /// repeat), each read as strongly as the single reads are. Adapters that can read many
    /// items in one request override this one-read-per-key default: the projector reads all
    /// the checkpoints of an SQS batch through it.
    async fn get_many(&self, keys: &[ModelKey]) -> Result<Vec<Found>, ReadModelError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(match key {
                ModelKey::Doc { tenant, view, key } => {
                    Found::Doc(self.get(tenant, view, key).await?)
                }
                ModelKey::Checkpoint { view, stream_id } => {
                    Found::Checkpoint(self.checkpoint(view, stream_id).await?)
                }
                ModelKey::Pointer { view } => Found::Pointer(self.pointer(view).await?),
            });
        }
        Ok(found)
    }

    /// Adds `deltas` to counter documents and moves the (view, stream) checkpoint from
    /// `expected` to `new`, all or nothing.
    async fn add(
        &self,
        tenant: &str,
        view: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        deltas: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError>;

    /// A page of `view` for `tenant`.
    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: ListQuery,
    ) -> Result<Page, ReadModelError>;

    /// The version pointer of `view`, read as strongly as `get` ([`ViewPointer::initial`]
    /// when none is stored). The default, for stores that keep no pointers (test doubles
    /// wrapping another store), is always the initial one: version 1 alone, as before
    /// versions existed.
    async fn pointer(&self, view: &str) -> Result<ViewPointer, ReadModelError> {
        let _ = view;
        Ok(ViewPointer::initial())
    }

    /// The pointers of `views`, in their order. Adapters that can read them in one request
    /// override this one-read-per-view default (the projector reads them once per batch).
    async fn pointers(&self, views: &[String]) -> Result<Vec<ViewPointer>, ReadModelError> {
        let mut found = Vec::with_capacity(views.len());
        for view in views {
            found.push(self.pointer(view).await?);
        }
        Ok(found)
    }

    /// Stores `pointer` for `view` if the stored one's revision is `pointer.rev - 1` (none
    /// stored: `pointer.rev == 1`), else [`ReadModelError::Conflict`]: one conditional write,
    /// so two operators cannot both move the pointer from the same state.
    async fn set_pointer(&self, view: &str, pointer: &ViewPointer) -> Result<(), ReadModelError> {
        let _ = pointer;
        Err(ReadModelError::Refused(
            format!("this store keeps no version pointers (view {view})").into(),
        ))
    }

    /// Deletes every document of the stored view `view` for each of `tenants` (hidden ones
    /// included) and its counter checkpoints: what retiring a version leaves behind. Returns
    /// the number of items deleted.
    async fn drop_view(&self, tenants: &[String], view: &str) -> Result<usize, ReadModelError> {
        let _ = tenants;
        Err(ReadModelError::Refused(
            format!("this store cannot drop views (view {view})").into(),
        ))
    }
}

/// A shared store is a store: every call goes to the one behind the `Arc` (so a projector and
/// a rebuild, or a test, can share one).
#[async_trait]
impl<T: ReadModelStore + ?Sized> ReadModelStore for std::sync::Arc<T> {
    async fn get(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<Doc>, ReadModelError> {
        (**self).get(tenant, view, key).await
    }

    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: Doc,
        expected: u64,
    ) -> Result<(), ReadModelError> {
        (**self).put(tenant, view, doc, expected).await
    }

    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError> {
        (**self).checkpoint(view, stream_id).await
    }

    async fn get_many(&self, keys: &[ModelKey]) -> Result<Vec<Found>, ReadModelError> {
        (**self).get_many(keys).await
    }

    async fn add(
        &self,
        tenant: &str,
        view: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        deltas: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        (**self)
            .add(tenant, view, stream_id, expected, new, deltas)
            .await
    }

    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: ListQuery,
    ) -> Result<Page, ReadModelError> {
        (**self).list(tenant, view, query).await
    }

    async fn pointer(&self, view: &str) -> Result<ViewPointer, ReadModelError> {
        (**self).pointer(view).await
    }

    async fn pointers(&self, views: &[String]) -> Result<Vec<ViewPointer>, ReadModelError> {
        (**self).pointers(views).await
    }

    async fn set_pointer(&self, view: &str, pointer: &ViewPointer) -> Result<(), ReadModelError> {
        (**self).set_pointer(view, pointer).await
    }

    async fn drop_view(&self, tenants: &[String], view: &str) -> Result<usize, ReadModelError> {
        (**self).drop_view(tenants, view).await
    }
}
