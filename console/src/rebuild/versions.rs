//! Zero-downtime rebuilds: a new version of a view is built from the events table while the
//! live one keeps serving, verified against it, promoted by one conditional write of the
//! view's pointer, and the old version retired after a grace period (its documents deleted:
//! a retired version number is never reused, so deleting is the only clean-up there is).
//!
//! The order of the steps is what makes it gap-free (see
//! `eventfold_consumers::projection::versions` for the pointer):
//!
//! 1. [`register`]: the new version joins the pointer's active set first. The projector reads
//!    the pointer once per batch, so every event it applies after this write goes to the new
//!    version too (catching each stream up from the table the first time).
//! 2. The events table is scanned (strongly consistent) *after* that write: an event the
//!    projector applied without the new version was in a batch read before the
//!    registration, so it was committed before the scan and the scan sees its stream head.
//! 3. [`replay`]: each stream is replayed to that head, pinned to the new version; where the
//!    projector got there first, the per-(version, stream) checkpoints make the replay a
//!    duplicate, and the conditional writes make concurrent ones retry: nothing is applied
//!    twice and nothing is left out.
//! 4. [`converge`]: the new version is compared with the live one until they agree (writes
//!    that land between the two versions' updates are only transient differences).
//! 5. [`promote`]: one conditional `PutItem` of the pointer; [`retire`] after the grace.

use super::{
    RebuildError, RebuildReport, RebuildTarget, category_of, differences, projector_for, rebuild,
    stored_view, stream_heads,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use eventfold::EventStore;
use eventfold_aws::read_models::DynamoReadModelStore;
use eventfold_consumers::projection::{ReadModelStore, ViewPointer, stored_name};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Rounds of comparison [`converge`] makes before reporting the differences left.
pub const VERIFY_ROUNDS: u32 = 20;
/// Pause between two rounds of comparison.
pub const VERIFY_PAUSE: Duration = Duration::from_millis(500);

fn pointer_error(
    view: &str,
    source: eventfold_consumers::projection::PointerError,
) -> RebuildError {
    RebuildError::Pointer {
        view: view.to_owned(),
        source,
    }
}

fn store_error(
    view: &str,
    source: eventfold_consumers::projection::ReadModelError,
) -> RebuildError {
    RebuildError::Store {
        view: view.to_owned(),
        source,
    }
}

/// Registers a new building version of the stored view `view`: one conditional write.
pub async fn register<R: ReadModelStore>(
    models: &R,
    view: &str,
    by: &str,
) -> Result<ViewPointer, RebuildError> {
    let pointer = models
        .pointer(view)
        .await
        .map_err(|e| store_error(view, e))?;
    let next = pointer
        .register_build(by)
        .map_err(|e| pointer_error(view, e))?;
    models
        .set_pointer(view, &next)
        .await
        .map_err(|e| store_error(view, e))?;
    Ok(next)
}

/// Replays every stream of `heads` of the view's category into `version`, reporting
/// progress as (done, total).
pub async fn replay<E: EventStore, R: ReadModelStore>(
    events: E,
    models: R,
    view: &str,
    version: u32,
    heads: &BTreeMap<String, u64>,
    progress: impl FnMut(usize, usize),
) -> Result<RebuildReport, RebuildError> {
    let category = category_of(view).ok_or_else(|| RebuildError::NoCategory(view.to_owned()))?;
    let projector = projector_for(events, models, view, &stored_name(view, version));
    rebuild(&projector, &category, heads, progress).await
}

/// Compares version `candidate` of `view` with version `live` for `tenants` until they agree,
/// at most `rounds` times `pause` apart: the differences left (none: verified).
///
/// The two versions are listed one after the other while the projector keeps writing both,
/// so a document written between the two listings shows as a difference in that round only
/// (new orders under a steady writer make one every round). A real difference is the same
/// in every round. So the versions agree when a round finds none, or when two rounds in a
/// row share none; what is left after the last round is the last round's differences that
/// the round before also had.
pub async fn converge<R: ReadModelStore>(
    models: &R,
    tenants: &BTreeSet<String>,
    view: &str,
    (live, candidate): (u32, u32),
    rounds: u32,
    pause: Duration,
) -> Result<Vec<String>, RebuildError> {
    let (a, b) = (stored_name(view, live), stored_name(view, candidate));
    let mut previous: Option<BTreeSet<String>> = None;
    let mut lasting = Vec::new();
    for round in 0..rounds.max(1) {
        if round > 0 {
            tokio::time::sleep(pause).await;
        }
        let now: BTreeSet<String> = differences(models, tenants, &a, &b)
            .await?
            .into_iter()
            .collect();
        lasting = match &previous {
            Some(before) => now.intersection(before).cloned().collect(),
            None => now.iter().cloned().collect(),
        };
        if now.is_empty() || (previous.is_some() && lasting.is_empty()) {
            return Ok(Vec::new());
        }
        previous = Some(now);
    }
    Ok(lasting)
}

/// A promote: the pointer after it, when it was written and how long the write took.
#[derive(Debug, Clone)]
pub struct Flip {
    /// The pointer as written.
    pub pointer: ViewPointer,
    /// When the write was sent.
    pub at: DateTime<Utc>,
    /// How long the one conditional write took (the only moment the live version changes).
    pub took: Duration,
}

/// Makes the building `version` live: one conditional write of the pointer.
pub async fn promote<R: ReadModelStore>(
    models: &R,
    view: &str,
    version: u32,
    grace: Duration,
    by: &str,
) -> Result<Flip, RebuildError> {
    let pointer = models
        .pointer(view)
        .await
        .map_err(|e| store_error(view, e))?;
    let at = Utc::now();
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let next = pointer
        .promote(version, at, grace, by)
        .map_err(|e| pointer_error(view, e))?;
    let started = Instant::now();
    models
        .set_pointer(view, &next)
        .await
        .map_err(|e| store_error(view, e))?;
    Ok(Flip {
        pointer: next,
        at,
        took: started.elapsed(),
    })
}

/// Retires the retiring `version` (refused within its grace period) and deletes its
/// documents for `tenants`: how many items were deleted.
pub async fn retire<R: ReadModelStore>(
    models: &R,
    view: &str,
    version: u32,
    tenants: &[String],
    by: &str,
) -> Result<usize, RebuildError> {
    let pointer = models
        .pointer(view)
        .await
        .map_err(|e| store_error(view, e))?;
    let next = pointer
        .retire(version, Utc::now(), by)
        .map_err(|e| pointer_error(view, e))?;
    models
        .set_pointer(view, &next)
        .await
        .map_err(|e| store_error(view, e))?;
    models
        .drop_view(tenants, &stored_name(view, version))
        .await
        .map_err(|e| store_error(view, e))
}

/// Abandons the building `version` (a failed rebuild) and deletes its documents.
pub async fn abandon<R: ReadModelStore>(
    models: &R,
    view: &str,
    version: u32,
    tenants: &[String],
    by: &str,
) -> Result<usize, RebuildError> {
    let pointer = models
        .pointer(view)
        .await
        .map_err(|e| store_error(view, e))?;
    let next = pointer
        .abandon(version, by)
        .map_err(|e| pointer_error(view, e))?;
    models
        .set_pointer(view, &next)
        .await
        .map_err(|e| store_error(view, e))?;
    models
        .drop_view(tenants, &stored_name(view, version))
        .await
        .map_err(|e| store_error(view, e))
}

/// Where a rebuild is, as the CLI prints it and the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The new version is registered; the table is being scanned.
    Scanning {
        /// The version.
        version: u32,
    },
    /// Streams replayed so far.
    Replaying {
        /// The version.
        version: u32,
        /// Streams done.
        done: usize,
        /// Streams in all.
        total: usize,
    },
    /// Comparing with the live version.
    Verifying {
        /// The version.
        version: u32,
    },
}

/// What [`Flow::build`] came to.
#[derive(Debug, Clone)]
pub struct Built {
    /// The new version.
    pub version: u32,
    /// The version live while it was built.
    pub live: u32,
    /// The replay.
    pub report: RebuildReport,
    /// The differences left with the live version (empty: verified).
    pub diffs: Vec<String>,
}

/// A zero-downtime rebuild of one view on DynamoDB tables, step by step.
#[derive(Debug, Clone)]
pub struct Flow {
    target: RebuildTarget,
    view: &'static str,
    by: String,
}

impl Flow {
    /// A rebuild of the stored view behind `view`, recorded as done by `by`.
    pub fn new(target: RebuildTarget, view: &str, by: &str) -> Result<Self, RebuildError> {
        let view = stored_view(view)?;
        category_of(view).ok_or_else(|| RebuildError::NoCategory(view.to_owned()))?;
        Ok(Self {
            target,
            view,
            by: by.to_owned(),
        })
    }

    /// The stored view.
    pub fn view(&self) -> &'static str {
        self.view
    }

    /// The read-models store.
    pub fn models(&self) -> DynamoReadModelStore {
        DynamoReadModelStore::from_sdk(&self.target.sdk, &self.target.read_models_table)
    }

    async fn heads(&self) -> Result<BTreeMap<String, u64>, RebuildError> {
        stream_heads(&Client::new(&self.target.sdk), &self.target.events_table).await
    }

    /// Tenants with streams of the view's category now.
    pub async fn tenants(&self) -> Result<Vec<String>, RebuildError> {
        let category = category_of(self.view).unwrap_or_default();
        let tenants: BTreeSet<String> = self
            .heads()
            .await?
            .keys()
            .filter_map(|s| eventfold::StreamId::parse(s).ok())
            .filter(|id| id.category() == category)
            .map(|id| id.tenant().to_owned())
            .collect();
        Ok(tenants.into_iter().collect())
    }

    /// Registers a new version, replays the table into it and compares it with the live
    /// one (steps 1 to 4 of the module docs).
    pub async fn build(&self, stage: impl Fn(Stage)) -> Result<Built, RebuildError> {
        let models = self.models();
        let pointer = register(&models, self.view, &self.by).await?;
        let version = pointer.building.unwrap_or(pointer.latest);
        stage(Stage::Scanning { version });
        let heads = self.heads().await?;
        let events = self.target.events();
        let report = replay(
            events,
            self.models(),
            self.view,
            version,
            &heads,
            |done, total| {
                stage(Stage::Replaying {
                    version,
                    done,
                    total,
                })
            },
        )
        .await?;
        stage(Stage::Verifying { version });
        let diffs = converge(
            &models,
            &report.tenants,
            self.view,
            (pointer.live, version),
            VERIFY_ROUNDS,
            VERIFY_PAUSE,
        )
        .await?;
        Ok(Built {
            version,
            live: pointer.live,
            report,
            diffs,
        })
    }

    /// Promotes `version` (see [`promote`]); the old live version retires after `grace`.
    pub async fn promote(&self, version: u32, grace: Duration) -> Result<Flip, RebuildError> {
        promote(&self.models(), self.view, version, grace, &self.by).await
    }

    /// Retires `version` and deletes its documents (see [`retire`]).
    pub async fn retire(&self, version: u32) -> Result<usize, RebuildError> {
        let tenants = self.tenants().await?;
        retire(&self.models(), self.view, version, &tenants, &self.by).await
    }

    /// Abandons the building `version` and deletes its documents (see [`abandon`]).
    pub async fn abandon(&self, version: u32) -> Result<usize, RebuildError> {
        let tenants = self.tenants().await?;
        abandon(&self.models(), self.view, version, &tenants, &self.by).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold::{MemoryEventStore, StreamId};
    use eventfold_consumers::projection::MemoryReadModelStore;
    use shop::views::ORDER_SUMMARY;
    use std::sync::Arc;

    /// Orders placed through the shop's executor, with the live projector applying them.
    async fn place(
        events: &Arc<MemoryEventStore>,
        models: &Arc<MemoryReadModelStore>,
        ids: std::ops::Range<u32>,
    ) {
        use eventfold::{CommandContext, CommandExecutor, ExecutorConfig};
        use shop::order::{Order, OrderCommand};
        let exec = CommandExecutor::new(events.clone(), ExecutorConfig::default());
        let projector = shop::views::projector(events.clone(), models.clone());
        for i in ids {
            let order = StreamId::new("t1", "Order", &format!("o-{i}")).expect("valid");
            let command = OrderCommand::CreateOrder {
                customer_id: "c-1".parse().expect("valid"),
            };
            let ctx = CommandContext::root("t1", "tester", format!("cmd-{i}"));
            exec.execute::<Order>(&order, None, &command, &ctx)
                .await
                .expect("create");
            for e in events
                .load_range(&order.to_string(), 1, None, None)
                .await
                .expect("load")
            {
                let n = eventfold_consumers::Notification::of(&e).expect("valid");
                projector.handle(&n).await.expect("project");
            }
        }
    }

    async fn heads(events: &MemoryEventStore, n: u32) -> BTreeMap<String, u64> {
        let mut heads = BTreeMap::new();
        for i in 0..n {
            let id = format!("t1/Order-o-{i}");
            let len = events
                .load_range(&id, 1, None, None)
                .await
                .expect("load")
                .len();
            if len > 0 {
                heads.insert(id, len as u64);
            }
        }
        heads
    }

    #[tokio::test]
    async fn a_rebuild_meets_the_live_projector_and_promote_and_retire_switch_versions() {
        let events = Arc::new(MemoryEventStore::new());
        let models = Arc::new(MemoryReadModelStore::new());
        place(&events, &models, 0..3).await;
        let pointer = register(&models, ORDER_SUMMARY, "op")
            .await
            .expect("register");
        assert_eq!(pointer.building, Some(2));
        // Orders written after the registration reach v2 through the live projector.
        place(&events, &models, 3..5).await;
        let scanned = heads(&events, 5).await;
        let report = replay(
            events.clone(),
            models.clone(),
            ORDER_SUMMARY,
            2,
            &scanned,
            |_, _| {},
        )
        .await
        .expect("replay");
        assert_eq!((report.streams, report.already_done), (5, 2));
        let tenants = report.tenants.clone();
        let diffs = converge(&models, &tenants, ORDER_SUMMARY, (1, 2), 1, Duration::ZERO)
            .await
            .expect("compare");
        assert!(diffs.is_empty(), "{diffs:?}");
        assert_eq!(models.snapshot("t1", "order-summary@v2").len(), 5);

        let early = retire(&models, ORDER_SUMMARY, 1, &["t1".into()], "op").await;
        assert!(
            matches!(early, Err(RebuildError::Pointer { .. })),
            "nothing retires before a promote: {early:?}"
        );
        let flip = promote(&models, ORDER_SUMMARY, 2, Duration::ZERO, "op")
            .await
            .expect("promote");
        assert_eq!(
            (flip.pointer.live, flip.pointer.retiring, flip.pointer.rev),
            (2, Some(1), 2)
        );
        let deleted = retire(&models, ORDER_SUMMARY, 1, &["t1".into()], "op")
            .await
            .expect("retire");
        assert_eq!(deleted, 5);
        assert!(models.snapshot("t1", ORDER_SUMMARY).is_empty());
        let pointer = models.pointer(ORDER_SUMMARY).await.expect("read");
        assert_eq!(pointer.active(), [2]);
    }

    #[tokio::test]
    async fn a_difference_seen_in_one_round_only_is_a_write_in_flight() {
        let events = Arc::new(MemoryEventStore::new());
        let models = Arc::new(MemoryReadModelStore::new());
        place(&events, &models, 0..2).await;
        register(&models, ORDER_SUMMARY, "op")
            .await
            .expect("register");
        let scanned = heads(&events, 2).await;
        replay(
            events.clone(),
            models.clone(),
            ORDER_SUMMARY,
            2,
            &scanned,
            |_, _| {},
        )
        .await
        .expect("replay");
        let tenants = BTreeSet::from(["t1".to_owned()]);
        // A document of v2 that v1 lacks: one round alone cannot tell it from a real one.
        let stray = eventfold_consumers::projection::Doc {
            key: "o-9".into(),
            data: serde_json::json!({"order_id": "o-9"}),
            checkpoint: 1,
            index: None,
        };
        models
            .put("t1", "order-summary@v2", stray.clone(), 0)
            .await
            .expect("put");
        let once = converge(&models, &tenants, ORDER_SUMMARY, (1, 2), 1, Duration::ZERO)
            .await
            .expect("compare");
        assert_eq!(once, ["t1/o-9: missing from the live view"]);
        // It lasts: still reported after several rounds.
        let lasting = converge(&models, &tenants, ORDER_SUMMARY, (1, 2), 3, Duration::ZERO)
            .await
            .expect("compare");
        assert_eq!(lasting, ["t1/o-9: missing from the live view"]);
        // The live projector applies it to v1 between rounds: verified.
        let (m, s) = (models.clone(), stray.clone());
        let catch_up = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            m.put("t1", ORDER_SUMMARY, s, 0).await.expect("put");
        });
        let later = converge(
            &models,
            &tenants,
            ORDER_SUMMARY,
            (1, 2),
            5,
            Duration::from_millis(20),
        )
        .await
        .expect("compare");
        catch_up.await.expect("joined");
        assert!(later.is_empty(), "{later:?}");
    }

    #[tokio::test]
    async fn a_differing_version_is_reported_and_can_be_abandoned() {
        let events = Arc::new(MemoryEventStore::new());
        let models = Arc::new(MemoryReadModelStore::new());
        place(&events, &models, 0..2).await;
        register(&models, ORDER_SUMMARY, "op")
            .await
            .expect("register");
        let scanned = heads(&events, 1).await; // one stream missed: o-1 is not replayed
        replay(
            events.clone(),
            models.clone(),
            ORDER_SUMMARY,
            2,
            &scanned,
            |_, _| {},
        )
        .await
        .expect("replay");
        let tenants = BTreeSet::from(["t1".to_owned()]);
        let diffs = converge(&models, &tenants, ORDER_SUMMARY, (1, 2), 2, Duration::ZERO)
            .await
            .expect("compare");
        assert_eq!(diffs, ["t1/o-1: only in the live view"]);
        let dropped = abandon(&models, ORDER_SUMMARY, 2, &["t1".into()], "op")
            .await
            .expect("abandon");
        assert_eq!(dropped, 1);
        let pointer = models.pointer(ORDER_SUMMARY).await.expect("read");
        assert_eq!((pointer.live, pointer.building), (1, None));
    }
}
