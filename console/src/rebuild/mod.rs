//! Projection rebuilds, for `eventfold projections rebuild` and the console: replays the
//! events table into a shadow copy or a new version of a view from empty checkpoints, and
//! compares it with the live view; [`versions`] registers, promotes and retires versions.
//!
//! Each stream is fed as one notification at its head version: the projector fills the
//! whole gap from the table in one read and writes once, so a rebuild costs about one read
//! and one write per stream, and re-running it resumes (streams already at their head are
//! duplicates).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use eventfold::{EventStore, StreamId};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::versions::{VersionedCounter, VersionedStream};
use eventfold_consumers::projection::{
    ListQuery, ProjectError, Projector, ReadModelError, ReadModelStore,
};
use serde_json::Value;
use shop::registry::{self, ViewImpl};
use shop::views::Registered;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub mod versions;

/// Suffix of the shadow view a rebuild writes.
pub const SHADOW_SUFFIX: &str = "@rebuild";

/// Why a rebuild (or its verification) could not run.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// No view has this name.
    #[error("unknown view '{view}'; known: {known}")]
    UnknownView {
        /// The name given.
        view: String,
        /// The views there are.
        known: String,
    },
    /// The stored view has no source category to rebuild from.
    #[error("no view named {0}")]
    NoCategory(String),
    /// Scanning the events table for stream heads failed.
    #[error("scanning {table}")]
    Scan {
        /// The events table.
        table: String,
        /// What DynamoDB said.
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },
    /// An item of the events table has an unreadable `version` or `count`.
    #[error("an item of {table} has an unreadable version or count")]
    BadItem {
        /// The events table.
        table: String,
        /// The parse failure.
        #[source]
        source: std::num::ParseIntError,
    },
    /// Projecting a stream into the shadow view failed.
    #[error("rebuilding from {stream}")]
    Project {
        /// The source stream.
        stream: String,
        /// Why.
        #[source]
        source: Box<ProjectError>,
    },
    /// The view's pointer does not allow the step (see
    /// `eventfold_consumers::projection::PointerError`).
    #[error("{view}: {source}")]
    Pointer {
        /// The stored view.
        view: String,
        /// Why.
        #[source]
        source: eventfold_consumers::projection::PointerError,
    },
    /// Reading or writing the view's pointer or dropping a version failed (a conflict: another
    /// operator moved the pointer first).
    #[error("{view}: {source}")]
    Store {
        /// The stored view.
        view: String,
        /// Why.
        #[source]
        source: ReadModelError,
    },
    /// Reading a view (live or shadow) failed.
    #[error("reading {view} of {tenant}")]
    Read {
        /// The view.
        view: String,
        /// The tenant.
        tenant: String,
        /// Why.
        #[source]
        source: ReadModelError,
    },
}

/// The stored view behind a view name (`orders-by-customer` is an index of `order-summary`).
pub fn stored_view(view: &str) -> Result<&'static str, RebuildError> {
    registry::view(view)
        .map(|spec| spec.stored())
        .ok_or_else(|| RebuildError::UnknownView {
            view: view.to_owned(),
            known: registry::view_names(),
        })
}

/// A projector writing only the stored view `view`, under the name `target` (a shadow or a
/// version of it), pinned: it ignores the view's pointer, so it writes `target` alone.
pub fn projector_for<E: EventStore, R: ReadModelStore>(
    events: E,
    models: R,
    view: &str,
    target: &str,
) -> Projector<E, R> {
    let p = Projector::new(events, models)
        .with_upcasters(registry::upcasters())
        .pinned();
    let name = target.to_owned();
    match registry::stored_view(view) {
        Some(ViewImpl::Stream(inner)) => p.with_stream_view(Arc::new(VersionedStream::new(
            Arc::new(Registered(inner)),
            name,
        ))),
        Some(ViewImpl::Counter(inner)) => p.with_counter_view(Arc::new(VersionedCounter::new(
            Arc::new(Registered(inner)),
            name,
        ))),
        None => p,
    }
}

/// Every stream of the events table with its head version (one paged, strongly consistent
/// Scan of the keys: every commit acknowledged before it starts is in it, which a rebuild
/// that meets the live projector relies on).
pub async fn stream_heads(
    client: &Client,
    table: &str,
) -> Result<BTreeMap<String, u64>, RebuildError> {
    let mut heads = BTreeMap::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .projection_expression("stream_id, #v, #c")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#c", "count")
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| RebuildError::Scan {
                table: table.to_owned(),
                source: Box::new(e.into()),
            })?;
        for item in out.items() {
            let (
                Some(AttributeValue::S(s)),
                Some(AttributeValue::N(v)),
                Some(AttributeValue::N(c)),
            ) = (
                item.get("stream_id"),
                item.get("version"),
                item.get("count"),
            )
            else {
                continue;
            };
            let number = |n: &String| {
                n.parse::<u64>().map_err(|source| RebuildError::BadItem {
                    table: table.to_owned(),
                    source,
                })
            };
            let last = number(v)? + number(c)?.saturating_sub(1);
            let head = heads.entry(s.clone()).or_insert(0);
            *head = (*head).max(last);
        }
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => return Ok(heads),
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Streams of the view's category.
    pub streams: usize,
    /// Streams that were already at their head in the shadow (resumed run).
    pub already_done: usize,
    /// Events read from the table.
    pub events_read: usize,
    /// Tenants seen.
    pub tenants: BTreeSet<String>,
}

/// Rebuilds `view` into `target` from `heads`, reporting progress as (done, total).
pub async fn rebuild<E: EventStore, R: ReadModelStore>(
    projector: &Projector<E, R>,
    category: &str,
    heads: &BTreeMap<String, u64>,
    mut progress: impl FnMut(usize, usize),
) -> Result<RebuildReport, RebuildError> {
    let streams: Vec<(StreamId, u64)> = heads
        .iter()
        .filter_map(|(s, v)| StreamId::parse(s).ok().map(|id| (id, *v)))
        .filter(|(id, _)| id.category() == category)
        .collect();
    let mut report = RebuildReport {
        streams: streams.len(),
        ..RebuildReport::default()
    };
    for (i, (id, head)) in streams.iter().enumerate() {
        report.tenants.insert(id.tenant().to_owned());
        let n = Notification {
            stream_id: id.to_string(),
            version: *head,
            event_id: uuid::Uuid::nil(),
            event_type: "(rebuild)".into(),
            tenant: id.tenant().to_owned(),
            category: id.category().to_owned(),
            event: None,
        };
        let applied = projector
            .handle(&n)
            .await
            .map_err(|source| RebuildError::Project {
                stream: id.to_string(),
                source: Box::new(source),
            })?;
        report.events_read += applied.events_read;
        if applied.views_changed == 0 {
            report.already_done += 1;
        }
        progress(i + 1, streams.len());
    }
    Ok(report)
}

/// Every visible document of `view` for `tenant`, by key.
pub async fn all_docs<R: ReadModelStore>(
    models: &R,
    tenant: &str,
    view: &str,
) -> Result<BTreeMap<String, Value>, RebuildError> {
    let mut out = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = models
            .list(
                tenant,
                view,
                ListQuery {
                    index: None,
                    cursor,
                    limit: 100,
                },
            )
            .await
            .map_err(|source| RebuildError::Read {
                view: view.to_owned(),
                tenant: tenant.to_owned(),
                source,
            })?;
        for d in page.docs {
            out.insert(d.key, d.data);
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The differences between the live view and its rebuilt shadow, one line each.
pub async fn differences<R: ReadModelStore>(
    models: &R,
    tenants: &BTreeSet<String>,
    view: &str,
    shadow: &str,
) -> Result<Vec<String>, RebuildError> {
    let mut diffs = Vec::new();
    for tenant in tenants {
        let live = all_docs(models, tenant, view).await?;
        let rebuilt = all_docs(models, tenant, shadow).await?;
        for key in live.keys().chain(rebuilt.keys()).collect::<BTreeSet<_>>() {
            match (live.get(key), rebuilt.get(key)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => {
                    diffs.push(format!("{tenant}/{key}: live {a} != rebuilt {b}"))
                }
                (Some(_), None) => diffs.push(format!("{tenant}/{key}: only in the live view")),
                (None, Some(_)) => {
                    diffs.push(format!("{tenant}/{key}: missing from the live view"))
                }
                (None, None) => {}
            }
        }
    }
    Ok(diffs)
}

/// Source category of a stored view.
pub fn category_of(view: &str) -> Option<String> {
    registry::stored_view(view).map(|v| v.category().to_owned())
}

/// Where to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildTarget {
    /// AWS SDK configuration.
    pub sdk: aws_config::SdkConfig,
    /// Events table name.
    pub events_table: String,
    /// Read-models table name.
    pub read_models_table: String,
    /// The key ring that opens personal fields for the views that copy them (the
    /// `customers` view); `None` reads them all as redacted, which only views without
    /// personal data may rebuild with.
    pub keys: Option<eventfold_aws::keys::SharedKeyRing>,
}

impl RebuildTarget {
    /// The events table as a rebuild reads it: personal fields opened with [`Self::keys`].
    pub fn events(&self) -> eventfold_aws::keys::SealedEventStore {
        let keys = self
            .keys
            .clone()
            .unwrap_or_else(|| std::sync::Arc::new(eventfold::NoKeys));
        eventfold::SealingStore::new(
            eventfold_aws::DynamoEventStore::from_sdk(&self.sdk, &self.events_table),
            keys,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold::MemoryEventStore;
    use eventfold_consumers::projection::MemoryReadModelStore;

    #[test]
    fn view_names_resolve_to_stored_views_and_their_categories() {
        assert_eq!(
            stored_view("orders-by-customer").expect("known"),
            "order-summary"
        );
        assert_eq!(stored_view("daily-sales").expect("known"), "daily-sales");
        let unknown = stored_view("nope").expect_err("unknown").to_string();
        assert_eq!(
            unknown,
            "unknown view 'nope'; known: order-summary, orders-by-customer, stock-levels, daily-sales, customers"
        );
        assert_eq!(category_of("stock-levels").as_deref(), Some("Inventory"));
        assert_eq!(category_of("daily-sales").as_deref(), Some("Order"));
        assert_eq!(category_of("orders-by-customer"), None);
    }

    #[test]
    fn a_rebuild_projector_writes_only_the_shadow_of_its_view() {
        for (view, shadow) in [
            ("order-summary", "order-summary@rebuild"),
            ("daily-sales", "daily-sales@rebuild"),
        ] {
            let p = projector_for(
                MemoryEventStore::new(),
                MemoryReadModelStore::new(),
                view,
                shadow,
            );
            assert_eq!(p.view_names(), [shadow]);
        }
        let none = projector_for(
            MemoryEventStore::new(),
            MemoryReadModelStore::new(),
            "orders-by-customer",
            "x",
        );
        assert!(none.view_names().is_empty());
    }
}
