//! View versions: a view's documents live under a version, and one small pointer per view
//! says which version is live (queries read it) and which are active (the projector keeps
//! them current).
//!
//! Version 1 is stored under the view's own name (`order-summary`), so the documents written
//! before versions existed are version 1 as they stand, and a view without a pointer is at
//! version 1 alone ([`ViewPointer::initial`]). Version `n > 1` is stored as
//! `{view}@v{n}` ([`stored_name`]). A zero-downtime rebuild moves the pointer through these
//! states, each one conditional write on the pointer's revision ([`ViewPointer::rev`]):
//!
//! 1. [`register_build`](ViewPointer::register_build): a new version `latest + 1` is
//!    *building*; from the next batch on the projector applies every notification to it too
//!    (it reads the pointer once per batch), so the rebuild's replay and the live stream meet
//!    without a gap, their checkpoints keeping each event applied once.
//! 2. [`promote`](ViewPointer::promote): the building version becomes *live* and the old
//!    live one *retiring*: one write, so every query that reads the pointer after it reads
//!    the new version. The retiring one stays active (complete and current) until
//!    `retire_after`, for queries that read the pointer just before the flip.
//! 3. [`retire`](ViewPointer::retire): the retiring version leaves the active set; its
//!    documents may then be deleted. Version numbers are never reused (`latest`), so a late
//!    write into a retired version cannot mix into a later one.
//!
//! [`abandon`](ViewPointer::abandon) drops a building version that failed verification.

use super::{ApplyError, Contribution, CounterView, StreamView};
use chrono::{DateTime, Utc};
use eventfold::envelope::EventEnvelope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The name version `version` of `view` is stored under: the view's own name for version 1
/// (what was stored before versions existed), `{view}@v{version}` after.
pub fn stored_name(view: &str, version: u32) -> String {
    if version <= 1 {
        view.to_owned()
    } else {
        format!("{view}@v{version}")
    }
}

/// Which versions of a view exist and which one queries read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewPointer {
    /// The version queries read.
    pub live: u32,
    /// The highest version ever registered (a new build takes `latest + 1`).
    pub latest: u32,
    /// A version being rebuilt: kept current by the projector, not read by queries.
    pub building: Option<u32>,
    /// The previous live version after a promote: kept current until it is retired.
    pub retiring: Option<u32>,
    /// Not retired before this instant (queries that read the pointer before the flip may
    /// still be reading the retiring version).
    pub retire_after: Option<DateTime<Utc>>,
    /// Revision of the stored pointer, bumped by every write (0: never written).
    pub rev: u64,
    /// Who made the last change, and what it was (for the console).
    pub note: Option<String>,
}

impl Default for ViewPointer {
    fn default() -> Self {
        Self::initial()
    }
}

/// A pointer change that does not apply to the pointer as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A version is already being built.
    #[error("version {0} is already being built (promote or abandon it first)")]
    AlreadyBuilding(u32),
    /// The previous live version is not retired yet.
    #[error("version {0} is still retiring (retire it first)")]
    StillRetiring(u32),
    /// The version named is not the one building.
    #[error("version {asked} is not building (building: {building:?})")]
    NotBuilding {
        /// The version asked for.
        asked: u32,
        /// The one building, if any.
        building: Option<u32>,
    },
    /// The version named is not the one retiring.
    #[error("version {asked} is not retiring (retiring: {retiring:?})")]
    NotRetiring {
        /// The version asked for.
        asked: u32,
        /// The one retiring, if any.
        retiring: Option<u32>,
    },
    /// The grace period after the promote has not passed.
    #[error("version {version} may be read until {until}; retire it after that")]
    InGrace {
        /// The retiring version.
        version: u32,
        /// End of the grace period.
        until: DateTime<Utc>,
    },
}

impl ViewPointer {
    /// A view nobody rebuilt: version 1 live and alone.
    pub fn initial() -> Self {
        Self {
            live: 1,
            latest: 1,
            building: None,
            retiring: None,
            retire_after: None,
            rev: 0,
            note: None,
        }
    }

    /// The versions the projector keeps current, newest first: a notification is applied
    /// to newer versions before older ones, so a reader moved to the newer version by a
    /// promote never misses what it just saw in the older one.
    pub fn active(&self) -> Vec<u32> {
        let mut versions: Vec<u32> = [Some(self.live), self.building, self.retiring]
            .into_iter()
            .flatten()
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        versions.dedup();
        versions
    }

    fn next(&self, note: String) -> Self {
        Self {
            rev: self.rev + 1,
            note: Some(note),
            ..self.clone()
        }
    }

    /// Registers a new building version (`latest + 1`); refused while another one builds or
    /// the previous live one still retires.
    pub fn register_build(&self, by: &str) -> Result<Self, PointerError> {
        if let Some(v) = self.building {
            return Err(PointerError::AlreadyBuilding(v));
        }
        if let Some(v) = self.retiring {
            return Err(PointerError::StillRetiring(v));
        }
        let version = self.latest + 1;
        let mut next = self.next(format!("v{version} registered by {by}"));
        next.latest = version;
        next.building = Some(version);
        Ok(next)
    }

    /// Makes the building `version` live; the live one retires, not before `now + grace`.
    pub fn promote(
        &self,
        version: u32,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        by: &str,
    ) -> Result<Self, PointerError> {
        if self.building != Some(version) {
            return Err(PointerError::NotBuilding {
                asked: version,
                building: self.building,
            });
        }
        let mut next = self.next(format!("v{version} promoted by {by}"));
        next.retiring = Some(self.live);
        next.live = version;
        next.building = None;
        next.retire_after = Some(now + grace);
        Ok(next)
    }

    /// Drops the retiring `version` from the active set, once its grace period is over.
    pub fn retire(&self, version: u32, now: DateTime<Utc>, by: &str) -> Result<Self, PointerError> {
        if self.retiring != Some(version) {
            return Err(PointerError::NotRetiring {
                asked: version,
                retiring: self.retiring,
            });
        }
        if let Some(until) = self.retire_after.filter(|t| now < *t) {
            return Err(PointerError::InGrace { version, until });
        }
        let mut next = self.next(format!("v{version} retired by {by}"));
        next.retiring = None;
        next.retire_after = None;
        Ok(next)
    }

    /// Drops the building `version` (a failed rebuild); the live one is untouched.
    pub fn abandon(&self, version: u32, by: &str) -> Result<Self, PointerError> {
        if self.building != Some(version) {
            return Err(PointerError::NotBuilding {
                asked: version,
                building: self.building,
            });
        }
        let mut next = self.next(format!("v{version} abandoned by {by}"));
        next.building = None;
        Ok(next)
    }
}

/// A stream view under the stored name of one of its versions.
pub struct VersionedStream {
    inner: Arc<dyn StreamView>,
    name: String,
}

impl VersionedStream {
    /// `inner`, storing under `name`.
    pub fn new(inner: Arc<dyn StreamView>, name: String) -> Self {
        Self { inner, name }
    }
}

impl StreamView for VersionedStream {
    fn name(&self) -> &str {
        &self.name
    }
    fn category(&self) -> &str {
        self.inner.category()
    }
    fn apply(&self, doc: Option<Value>, e: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        self.inner.apply(doc, e)
    }
    fn index(&self, doc: &Value) -> Option<(String, String)> {
        self.inner.index(doc)
    }
}

/// A counter view under the stored name of one of its versions.
pub struct VersionedCounter {
    inner: Arc<dyn CounterView>,
    name: String,
}

impl VersionedCounter {
    /// `inner`, storing under `name`.
    pub fn new(inner: Arc<dyn CounterView>, name: String) -> Self {
        Self { inner, name }
    }
}

impl CounterView for VersionedCounter {
    fn name(&self) -> &str {
        &self.name
    }
    fn category(&self) -> &str {
        self.inner.category()
    }
    fn contribution(&self, e: &EventEnvelope) -> Result<Contribution, ApplyError> {
        self.inner.contribution(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid")
    }

    #[test]
    fn version_one_is_the_bare_name() {
        assert_eq!(stored_name("order-summary", 1), "order-summary");
        assert_eq!(stored_name("order-summary", 3), "order-summary@v3");
        assert_eq!(ViewPointer::initial().active(), [1]);
    }

    #[test]
    fn a_full_cycle_moves_through_building_live_and_retiring() {
        let p0 = ViewPointer::initial();
        let p1 = p0.register_build("op").expect("register");
        assert_eq!(
            (p1.live, p1.building, p1.latest, p1.rev),
            (1, Some(2), 2, 1)
        );
        assert_eq!(p1.active(), [2, 1], "newest first");
        let p2 = p1
            .promote(2, at(100), chrono::Duration::seconds(30), "op")
            .expect("promote");
        assert_eq!((p2.live, p2.building, p2.retiring), (2, None, Some(1)));
        assert_eq!(
            p2.active(),
            [2, 1],
            "the old one stays current in its grace"
        );
        assert_eq!(p2.rev, 2);
        assert_eq!(
            p2.retire(1, at(110), "op"),
            Err(PointerError::InGrace {
                version: 1,
                until: at(130)
            })
        );
        let p3 = p2.retire(1, at(130), "op").expect("retire after grace");
        assert_eq!((p3.live, p3.retiring, p3.active()), (2, None, vec![2]));
        let p4 = p3.register_build("op").expect("again");
        assert_eq!(p4.building, Some(3), "version numbers are never reused");
    }

    #[test]
    fn refusals_leave_no_half_states() {
        let building = ViewPointer::initial().register_build("op").expect("ok");
        assert_eq!(
            building.register_build("op"),
            Err(PointerError::AlreadyBuilding(2))
        );
        assert!(matches!(
            building.promote(3, at(0), chrono::Duration::zero(), "op"),
            Err(PointerError::NotBuilding {
                asked: 3,
                building: Some(2)
            })
        ));
        assert!(matches!(
            building.retire(1, at(0), "op"),
            Err(PointerError::NotRetiring { .. })
        ));
        let promoted = building
            .promote(2, at(0), chrono::Duration::zero(), "op")
            .expect("ok");
        assert_eq!(
            promoted.register_build("op"),
            Err(PointerError::StillRetiring(1))
        );
        let abandoned = ViewPointer::initial()
            .register_build("op")
            .and_then(|p| p.abandon(2, "op"))
            .expect("abandon");
        assert_eq!((abandoned.live, abandoned.building), (1, None));
        assert_eq!(abandoned.latest, 2, "the abandoned number stays taken");
        assert!(
            abandoned
                .note
                .as_deref()
                .is_some_and(|n| n.contains("abandoned"))
        );
    }
}
