//! Consumer-group membership, Kafka's contract without a broker: members join a group of a
//! topic, share its partitions (each partition owned by exactly one member per generation),
//! keep their session by heartbeats and leave; a member whose session expired is dropped.
//!
//! Every join, leave and expiry starts a new *generation* and reassigns the partitions with
//! the **range** strategy ([`assign_range`]): the members in member-id order, the partitions
//! cut into contiguous ranges of `partitions / members`, the first `partitions % members`
//! members taking one more. It is a pure function of the member ids and the partition count,
//! so any two readers of one generation agree on it, and members with more ids than
//! partitions stay idle.
//!
//! Membership lives in the group's own state ([`GroupState`](crate::GroupState)): one item
//! per group, so a commit's ownership check and the offsets it moves are one conditional
//! write. Expiry is evaluated lazily ([`Membership::settle`]) by every call that reads the
//! group (join, heartbeat, leave, consume, commit, lag); no scheduler runs. A dead member's
//! partitions therefore move at the first call after its session timeout, which live
//! members make at least once per heartbeat interval.

use super::{Offsets, StreamingError, validate_token};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Shortest session a member may ask for, in milliseconds.
pub const MIN_SESSION_TIMEOUT_MS: u64 = 1_000;
/// Longest session a member may ask for, in milliseconds (10 minutes).
pub const MAX_SESSION_TIMEOUT_MS: u64 = 600_000;
/// Session of a join that names none, in milliseconds.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 30_000;
/// Most members of one group: as many as a topic may have partitions; the group's item
/// stays far below DynamoDB's 400 KB.
pub const MAX_MEMBERS: usize = 64;

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// How long its session lasts after each join or heartbeat, in milliseconds.
    pub session_timeout_ms: u64,
    /// When its session ends unless it heartbeats (epoch milliseconds).
    pub expires_at_ms: i64,
    /// The partitions it owns in the current generation, ascending.
    pub partitions: Vec<u32>,
    /// The last offsets its previous `auto_commit` consume returned; cleared by a rebalance
    /// (they are then redelivered to the partitions' owners: at least once, never lost).
    pub delivered: Offsets,
}

/// The members of a group and their generation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    /// Counts the rebalances of the group (0: nobody ever joined); never goes back, so a
    /// member of an earlier generation is always told apart.
    pub generation: u64,
    /// The live members, by member id.
    pub members: BTreeMap<String, Member>,
}

/// What a member names when it consumes or commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberClaim {
    /// Its member id.
    pub member_id: String,
    /// The generation it was assigned its partitions in; `None` on a consume: the current.
    pub generation: Option<u64>,
}

/// A member's view of the group after a join or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// Its member id.
    pub member_id: String,
    /// The current generation.
    pub generation: u64,
    /// The partitions it owns in that generation.
    pub partitions: Vec<u32>,
    /// Its session, in milliseconds.
    pub session_timeout_ms: u64,
    /// When its session ends unless it heartbeats.
    pub expires_at: DateTime<Utc>,
}

/// One member as a group's description shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// Its member id.
    pub member_id: String,
    /// The partitions it owns.
    pub partitions: Vec<u32>,
    /// Its session, in milliseconds.
    pub session_timeout_ms: u64,
    /// When its session ends unless it heartbeats.
    pub expires_at: DateTime<Utc>,
}

/// The range assignment of `partitions` to `members` (in the order given, which callers keep
/// sorted): member `i` of `n` owns a contiguous range of `partitions / n` partitions, plus one
/// when `i < partitions % n`.
pub fn assign_range(members: usize, partitions: u32) -> Vec<Vec<u32>> {
    if members == 0 {
        return Vec::new();
    }
    let n = members as u32;
    let (share, extra) = (partitions / n, partitions % n);
    let mut next = 0;
    (0..n)
        .map(|i| {
            let take = share + u32::from(i < extra);
            let range: Vec<u32> = (next..next + take).collect();
            next += take;
            range
        })
        .collect()
}

/// Checks a requested session timeout against the bounds.
pub fn check_session_timeout(ms: u64) -> Result<Duration, StreamingError> {
    if (MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(StreamingError::Invalid(format!(
            "session_timeout_ms must be {MIN_SESSION_TIMEOUT_MS}..={MAX_SESSION_TIMEOUT_MS}"
        )))
    }
}

/// Checks a member id: as a group id, `[a-zA-Z0-9._-]{1,128}`.
pub fn check_member_id(id: &str) -> Result<(), StreamingError> {
    validate_token("member_id", id)
}

fn time_of(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Member {
    fn expires_at(&self) -> DateTime<Utc> {
        time_of(self.expires_at_ms)
    }
}

impl Membership {
    /// Whether anyone is a member (the group is then in member mode: single-cursor calls are
    /// refused).
    pub fn is_active(&self) -> bool {
        !self.members.is_empty()
    }

    /// A new generation: every member's partitions by [`assign_range`], pending
    /// auto-commits forgotten.
    pub fn rebalance(&mut self, partitions: u32) {
        self.generation += 1;
        let ranges = assign_range(self.members.len(), partitions);
        for (member, range) in self.members.values_mut().zip(ranges) {
            member.partitions = range;
            member.delivered.clear();
        }
    }

    /// Drops the members whose session ended before `now` and rebalances when any did.
    /// Returns the ids dropped.
    pub fn settle(&mut self, now: DateTime<Utc>, partitions: u32) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.expires_at() < now)
            .map(|(id, _)| id.clone())
            .collect();
        if !gone.is_empty() {
            for id in &gone {
                self.members.remove(id);
            }
            self.rebalance(partitions);
        }
        gone
    }

    /// Adds `id` (a new generation) or, when it is a member already, renews its session
    /// (same generation, same partitions: a restarted client that kept its id keeps them).
    pub fn join(
        &mut self,
        id: &str,
        session: Duration,
        now: DateTime<Utc>,
        partitions: u32,
    ) -> Result<(), StreamingError> {
        let timeout_ms = session.as_millis() as u64;
        let expires_at_ms = now.timestamp_millis() + timeout_ms as i64;
        if let Some(m) = self.members.get_mut(id) {
            m.session_timeout_ms = timeout_ms;
            m.expires_at_ms = expires_at_ms;
            return Ok(());
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(StreamingError::Conflict(format!(
                "the group has {MAX_MEMBERS} members, the most it takes"
            )));
        }
        self.members.insert(
            id.to_owned(),
            Member {
                session_timeout_ms: timeout_ms,
                expires_at_ms,
                partitions: Vec::new(),
                delivered: Offsets::new(),
            },
        );
        self.rebalance(partitions);
        Ok(())
    }

    /// Renews `id`'s session; refused when it is no member (its session expired or it left).
    pub fn heartbeat(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), StreamingError> {
        let generation = self.generation;
        let m = self
            .members
            .get_mut(id)
            .ok_or_else(|| not_a_member(id, generation))?;
        m.expires_at_ms = now.timestamp_millis() + m.session_timeout_ms as i64;
        Ok(())
    }

    /// Removes `id` (a new generation); `false` when it was no member.
    pub fn leave(&mut self, id: &str, partitions: u32) -> bool {
        if self.members.remove(id).is_none() {
            return false;
        }
        self.rebalance(partitions);
        true
    }

    /// The member `claim` names, checked: a member of the current generation (when the claim
    /// names one). Refusals are [`StreamingError::Rebalanced`].
    pub fn check(&self, claim: &MemberClaim) -> Result<&Member, StreamingError> {
        let m = self
            .members
            .get(&claim.member_id)
            .ok_or_else(|| not_a_member(&claim.member_id, self.generation))?;
        match claim.generation {
            Some(g) if g != self.generation => Err(StreamingError::Rebalanced {
                generation: self.generation,
                partitions: Some(m.partitions.clone()),
                detail: format!(
                    "generation {g} is over: the group rebalanced to generation {}; member '{}' now owns partitions {:?}",
                    self.generation, claim.member_id, m.partitions
                ),
            }),
            _ => Ok(m),
        }
    }

    /// [`Membership::check`], and that the member owns every partition of `offsets`.
    pub fn check_owns(&self, claim: &MemberClaim, offsets: &Offsets) -> Result<(), StreamingError> {
        let m = self.check(claim)?;
        if let Some(p) = offsets.keys().find(|p| !m.partitions.contains(p)) {
            return Err(StreamingError::Rebalanced {
                generation: self.generation,
                partitions: Some(m.partitions.clone()),
                detail: format!(
                    "member '{}' does not own partition {p} in generation {} (it owns {:?})",
                    claim.member_id, self.generation, m.partitions
                ),
            });
        }
        Ok(())
    }

    /// The owner of partition `p`, if any member has it.
    pub fn owner(&self, p: u32) -> Option<&str> {
        self.members
            .iter()
            .find(|(_, m)| m.partitions.contains(&p))
            .map(|(id, _)| id.as_str())
    }

    /// `id`'s assignment (it must be a member).
    pub fn assignment(&self, id: &str) -> Result<Assignment, StreamingError> {
        let m = self
            .members
            .get(id)
            .ok_or_else(|| not_a_member(id, self.generation))?;
        Ok(Assignment {
            member_id: id.to_owned(),
            generation: self.generation,
            partitions: m.partitions.clone(),
            session_timeout_ms: m.session_timeout_ms,
            expires_at: m.expires_at(),
        })
    }

    /// Every member, in member-id order.
    pub fn describe(&self) -> Vec<MemberInfo> {
        self.members
            .iter()
            .map(|(id, m)| MemberInfo {
                member_id: id.clone(),
                partitions: m.partitions.clone(),
                session_timeout_ms: m.session_timeout_ms,
                expires_at: m.expires_at(),
            })
            .collect()
    }
}

/// The refusal of a call by a member the group does not have.
fn not_a_member(id: &str, generation: u64) -> StreamingError {
    StreamingError::Rebalanced {
        generation,
        partitions: None,
        detail: format!(
            "'{id}' is not a member of the group in generation {generation} (its session expired or it left): join again"
        ),
    }
}

/// The refusal of a single-cursor call (no member id) on a group that has members: it would
/// move the members' offsets behind their backs.
pub(crate) fn members_only(generation: u64, members: usize) -> StreamingError {
    StreamingError::Rebalanced {
        generation,
        partitions: None,
        detail: format!(
            "the group has {members} member(s) in generation {generation}: consume and commit with member_id (join first), or use another group_id"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        time_of(ms)
    }

    #[test]
    fn the_range_strategy_gives_every_partition_to_exactly_one_member() {
        assert_eq!(
            assign_range(3, 8),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]
        );
        assert_eq!(assign_range(2, 8), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(assign_range(3, 2), vec![vec![0], vec![1], vec![]]);
        assert!(assign_range(0, 8).is_empty());
        for members in 1..=10 {
            for partitions in 1..=64 {
                let mut all: Vec<u32> = assign_range(members, partitions).concat();
                all.sort_unstable();
                assert_eq!(all, (0..partitions).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn joins_leaves_and_expiry_start_generations_and_reassign() {
        let mut g = Membership::default();
        let s = Duration::from_millis(2_000);
        g.join("b", s, at(1_000), 8).expect("join");
        assert_eq!((g.generation, g.members["b"].partitions.len()), (1, 8));
        g.join("a", s, at(1_500), 8).expect("join");
        assert_eq!(g.generation, 2);
        // Member-id order: "a" takes the first range.
        assert_eq!(g.members["a"].partitions, vec![0, 1, 2, 3]);
        assert_eq!(g.members["b"].partitions, vec![4, 5, 6, 7]);
        // A rejoin under the same id renews the session only.
        g.join("a", s, at(2_000), 8).expect("rejoin");
        assert_eq!(g.generation, 2);
        // "b" last renewed at 1 000 + 2 000: gone after 3 000, "a" (until 4 000) stays.
        assert!(g.settle(at(3_000), 8).is_empty());
        assert_eq!(g.settle(at(3_001), 8), vec!["b".to_owned()]);
        assert_eq!(g.generation, 3);
        assert_eq!(g.members["a"].partitions, (0..8).collect::<Vec<_>>());
        assert!(g.heartbeat("b", at(3_002)).is_err());
        g.heartbeat("a", at(3_500)).expect("heartbeat");
        assert_eq!(g.members["a"].expires_at_ms, 5_500);
        assert!(g.leave("a", 8));
        assert!(!g.leave("a", 8));
        assert_eq!((g.generation, g.is_active()), (4, false));
    }

    #[test]
    fn stale_generations_and_unowned_partitions_are_refused_with_the_current_generation() {
        let mut g = Membership::default();
        let s = Duration::from_secs(10);
        g.join("a", s, at(0), 4).expect("join");
        g.join("b", s, at(0), 4).expect("join");
        let claim = |generation| MemberClaim {
            member_id: "a".into(),
            generation,
        };
        g.check_owns(&claim(Some(2)), &[(0, 5), (1, 1)].into())
            .expect("a owns 0 and 1 in generation 2");
        for (c, offsets) in [
            (claim(Some(1)), Offsets::from([(0, 5)])),
            (claim(Some(2)), Offsets::from([(2, 5)])),
            (
                MemberClaim {
                    member_id: "zombie".into(),
                    generation: Some(2),
                },
                Offsets::from([(0, 5)]),
            ),
        ] {
            match g.check_owns(&c, &offsets) {
                Err(StreamingError::Rebalanced { generation, .. }) => assert_eq!(generation, 2),
                other => panic!("{c:?} {offsets:?}: {other:?}"),
            }
        }
        assert_eq!(g.owner(3), Some("b"));
    }

    #[test]
    fn session_bounds_are_stated_and_checked() {
        assert!(check_session_timeout(MIN_SESSION_TIMEOUT_MS).is_ok());
        assert!(check_session_timeout(MAX_SESSION_TIMEOUT_MS).is_ok());
        assert!(check_session_timeout(MIN_SESSION_TIMEOUT_MS - 1).is_err());
        assert!(check_session_timeout(MAX_SESSION_TIMEOUT_MS + 1).is_err());
    }

    #[test]
    fn a_full_group_refuses_another_member() {
        let mut g = Membership::default();
        for i in 0..MAX_MEMBERS {
            g.join(&format!("m{i}"), Duration::from_secs(5), at(0), 64)
                .expect("join");
        }
        assert!(matches!(
            g.join("late", Duration::from_secs(5), at(0), 64),
            Err(StreamingError::Conflict(_))
        ));
        assert!(g.members.values().all(|m| m.partitions.len() == 1));
    }
}
