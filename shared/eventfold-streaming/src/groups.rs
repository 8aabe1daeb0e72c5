//! The membership side of [`Streams`]: join, heartbeat, leave and a group's description,
//! each a conditional write of the group's one item ([`crate::members`] holds the rules).
//! Every call that reads a group first settles it ([`Streams::settled`]): members whose
//! session ended are dropped, and the new generation is written, before the call's own
//! checks run against it.

use super::members::{Assignment, MemberInfo, Membership, check_member_id, check_session_timeout};
use super::ports::{GroupState, GroupStore, TopicCatalogue, Versioned};
use super::service::Streams;
use super::types::PartitionLag;
use super::{StreamingError, Topic, validate_token};
use chrono::{DateTime, Utc};
use eventfold::store::EventStore;
use serde::Serialize;

/// A group as `GET /consume/lag` shows it: its generation, members and their partitions,
/// and every partition's lag and owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The current generation (0: nobody ever joined).
    pub generation: u64,
    /// The live members, in member-id order (empty: single-cursor mode).
    pub members: Vec<MemberInfo>,
    /// Lag and owner per partition.
    pub partitions: Vec<PartitionLag>,
}

impl<E: EventStore, C: TopicCatalogue, G: GroupStore> Streams<E, C, G> {
    /// Now, by the configured clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        (self.config.clock)()
    }

    /// The group's state with expired members dropped; written (a new generation) when any
    /// was, so every caller sees the same generation and assignment.
    pub(super) async fn settled(
        &self,
        tenant: &str,
        topic: &Topic,
        group: &str,
    ) -> Result<Versioned<GroupState>, StreamingError> {
        let state = self.group_state(tenant, &topic.name, group).await?;
        let now = self.now();
        let partitions = topic.settings.partitions;
        if state
            .value
            .membership
            .clone()
            .settle(now, partitions)
            .is_empty()
        {
            return Ok(state);
        }
        self.update_group(tenant, &topic.name, group, state, |s| {
            let mut next = s.clone();
            let gone = next.membership.settle(now, partitions);
            if !gone.is_empty() {
                tracing::info!(
                    group,
                    ?gone,
                    generation = next.membership.generation,
                    "sessions expired; partitions reassigned"
                );
            }
            Ok(next)
        })
        .await
    }

    /// `member_id` (a fresh one when `None`) joins `group` on `topic` with a session of
    /// `session_timeout_ms`: a new member starts a new generation; a member already there
    /// renews its session and keeps its partitions. Returns its assignment.
    pub async fn join(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        member_id: Option<&str>,
        session_timeout_ms: u64,
    ) -> Result<Assignment, StreamingError> {
        validate_token("group_id", group)?;
        if let Some(id) = member_id {
            check_member_id(id)?;
        }
        let session = check_session_timeout(session_timeout_ms)?;
        let topic = self.topic(tenant, topic).await?;
        let id = member_id.map_or_else(
            || format!("m-{}", uuid::Uuid::now_v7().simple()),
            str::to_owned,
        );
        let written = self
            .change_membership(tenant, &topic, group, |m, now, partitions| {
                m.join(&id, session, now, partitions)
            })
            .await?;
        tracing::info!(group, member = %id, generation = written.value.membership.generation, "member joined");
        written.value.membership.assignment(&id)
    }

    /// Renews `member_id`'s session. Returns its assignment in the current generation (a
    /// member learns of a rebalance here); refused with [`StreamingError::Rebalanced`] when
    /// it is no member.
    pub async fn heartbeat(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        member_id: &str,
    ) -> Result<Assignment, StreamingError> {
        validate_token("group_id", group)?;
        check_member_id(member_id)?;
        let topic = self.topic(tenant, topic).await?;
        let written = self
            .change_membership(tenant, &topic, group, |m, now, _| {
                m.heartbeat(member_id, now)
            })
            .await?;
        written.value.membership.assignment(member_id)
    }

    /// `member_id` leaves `group` (a new generation when it was a member; a no-op when it was
    /// not). Returns the group's generation after it.
    pub async fn leave(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        member_id: &str,
    ) -> Result<u64, StreamingError> {
        validate_token("group_id", group)?;
        check_member_id(member_id)?;
        let topic = self.topic(tenant, topic).await?;
        let written = self
            .change_membership(tenant, &topic, group, |m, _, partitions| {
                m.leave(member_id, partitions);
                Ok(())
            })
            .await?;
        tracing::info!(group, member = %member_id, generation = written.value.membership.generation, "member left");
        Ok(written.value.membership.generation)
    }

    /// One change of `group`'s membership: the settled state, settled again as of now (a
    /// session may end between the two), `change` applied with now and the topic's
    /// partition count, written conditioned on the revision read.
    async fn change_membership(
        &self,
        tenant: &str,
        topic: &Topic,
        group: &str,
        change: impl Fn(&mut Membership, DateTime<Utc>, u32) -> Result<(), StreamingError>,
    ) -> Result<Versioned<GroupState>, StreamingError> {
        let partitions = topic.settings.partitions;
        let state = self.settled(tenant, topic, group).await?;
        let now = self.now();
        self.update_group(tenant, &topic.name, group, state, |s| {
            let mut next = s.clone();
            next.membership.settle(now, partitions);
            change(&mut next.membership, now, partitions)?;
            Ok(next)
        })
        .await
    }

    /// The group's generation, members with their partitions, and lag and owner per
    /// partition (expired members dropped first).
    pub async fn describe_group(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<GroupDescription, StreamingError> {
        validate_token("group_id", group)?;
        let topic = self.topic(tenant, topic).await?;
        let state = self.settled(tenant, &topic, group).await?;
        Ok(GroupDescription {
            generation: state.value.membership.generation,
            members: state.value.membership.describe(),
            partitions: self.lag_of(tenant, &topic, &state.value).await?,
        })
    }
}
