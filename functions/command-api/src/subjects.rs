//! The data-subject routes (GDPR): `POST /subjects/{subject_id}/forget` (Art. 17) and
//! `GET /subjects/{subject_id}` (Art. 15 export), scope `events:admin`, in the caller's
//! tenant only: a subject of another tenant is 404, like one that does not exist.
//!
//! A subject is a stream of the registry's [`registry::SUBJECT_CATEGORY`] (the shop's
//! customers). A forget, in this order: (1) the subject's key is deleted and a tombstone
//! left ([`eventfold::KeyRing::forget`]): from here on nothing the subject's key sealed
//! opens anywhere; (2) the registry's [`registry::FORGET_COMMAND`] appends
//! `SubjectForgotten`, which the projector turns into scrubbed view documents. Both steps
//! are idempotent, so a forget that failed half-way is finished by asking again; the event
//! never claims a forget whose key still exists.

use crate::{CommandApi, stream_of};
use eventfold::{CacheFor, CommandContext, CommandError, EventStore, KeyError, KeyRing};
use eventfold_aws::http::{Caller, Problem, json_response};
use lambda_http::{Body, Response};
use serde_json::json;
use shop::registry::{self, AsyncAggregateVisitor, RegisteredAggregate, ShopCaches};
use std::sync::Arc;

/// Route key of a forget.
pub const FORGET_SUBJECT: &str = "POST /api/v1/events/subjects/{subject_id}/forget";
/// Route key of an export.
pub const EXPORT_SUBJECT: &str = "GET /api/v1/events/subjects/{subject_id}";
/// Most events an export lists (a subject's stream is short; more is cut, and said so).
pub const EXPORT_EVENTS: usize = 1000;

fn key_problem(e: KeyError) -> Problem {
    Problem::from(&CommandError::Unavailable(e.into()))
}

/// Sends the forget command to the subject's stream.
struct Forget<'a, S> {
    api: &'a CommandApi<S>,
    stream: &'a eventfold::StreamId,
    context: &'a CommandContext,
}

impl<S: EventStore> AsyncAggregateVisitor for Forget<'_, S> {
    type Output = Result<(u64, usize), Problem>;

    async fn visit<A: RegisteredAggregate>(self) -> Self::Output
    where
        ShopCaches: CacheFor<A>,
    {
        let command = A::parse_command(registry::FORGET_COMMAND, serde_json::Value::Null)
            .map_err(|e| Problem::bad_request("unknown-command-type", e.to_string()))?;
        let out = self
            .api
            .executor()
            .execute::<A>(self.stream, None, &command, self.context)
            .await
            .map_err(|e| Problem::from(&e))?;
        Ok((out.version, out.events.len()))
    }
}

/// The subject's state as JSON.
struct Export<'a, S> {
    api: &'a CommandApi<S>,
    stream: &'a eventfold::StreamId,
}

impl<S: EventStore> AsyncAggregateVisitor for Export<'_, S> {
    type Output = Result<serde_json::Value, Problem>;

    async fn visit<A: RegisteredAggregate>(self) -> Self::Output
    where
        ShopCaches: CacheFor<A>,
    {
        let (_, state) = self
            .api
            .executor()
            .load::<A>(self.stream)
            .await
            .map_err(|e| Problem::from(&e))?;
        serde_json::to_value(&state).map_err(|e| Problem::from(&CommandError::Internal(e.into())))
    }
}

impl<S: EventStore> CommandApi<S> {
    fn key_ring(&self) -> Result<&Arc<dyn KeyRing>, Problem> {
        self.keys.as_ref().ok_or_else(|| {
            Problem::new(
                503,
                "unavailable",
                "Service unavailable",
                "no key ring is configured",
            )
        })
    }

    /// The subject's stream, when it exists in the caller's tenant (else 404).
    async fn subject_stream(
        &self,
        caller: &Caller,
        subject: &str,
    ) -> Result<eventfold::StreamId, Problem> {
        let stream = stream_of(caller, registry::SUBJECT_CATEGORY, subject)?;
        let head = self
            .executor()
            .store()
            .head(&stream.to_string())
            .await
            .map_err(|e| Problem::from(&CommandError::from(e)))?;
        if head == 0 {
            return Err(Problem::not_found(format!("no data subject '{subject}'")));
        }
        Ok(stream)
    }

    /// `POST /subjects/{subject_id}/forget` for `caller` (also what `eventfold gdpr forget`
    /// runs, with an operator as the caller).
    pub async fn forget(
        &self,
        caller: &Caller,
        subject: &str,
        correlation: &str,
    ) -> Result<Response<Body>, Problem> {
        caller.require("events:admin")?;
        let keys = self.key_ring()?;
        let stream = self.subject_stream(caller, subject).await?;
        let before = keys
            .forget(&caller.tenant, subject)
            .await
            .map_err(key_problem)?;
        let command_id = uuid::Uuid::now_v7().to_string();
        let context = CommandContext {
            tenant: caller.tenant.clone(),
            actor: caller.actor.clone(),
            correlation_id: correlation.to_owned(),
            causation_id: command_id.clone(),
            command_id,
            trace: None,
        };
        let forget = Forget {
            api: self,
            stream: &stream,
            context: &context,
        };
        let (version, appended) = registry::visit_async(registry::SUBJECT_CATEGORY, forget)
            .await
            .map_err(|e| Problem::bad_request("unknown-aggregate-type", e.to_string()))??;
        tracing::info!(subject, stream_id = %stream, version, appended, key_before = ?before, "data subject forgotten");
        Ok(json_response(
            200,
            &json!({
                "subject": subject,
                "stream_id": stream.to_string(),
                "version": version,
                "forgotten": true,
                "key_before": before,
            }),
        ))
    }

    /// `GET /subjects/{subject_id}`: what is held of the subject (Art. 15), for `caller`.
    pub async fn export(&self, caller: &Caller, subject: &str) -> Result<Response<Body>, Problem> {
        caller.require("events:admin")?;
        let keys = self.key_ring()?;
        let stream = self.subject_stream(caller, subject).await?;
        let key = keys
            .status(&caller.tenant, subject)
            .await
            .map_err(key_problem)?;
        let export = Export {
            api: self,
            stream: &stream,
        };
        let state = registry::visit_async(registry::SUBJECT_CATEGORY, export)
            .await
            .map_err(|e| Problem::bad_request("unknown-aggregate-type", e.to_string()))??;
        let events = self
            .executor()
            .store()
            .load_range(&stream.to_string(), 1, None, Some(EXPORT_EVENTS + 1))
            .await
            .map_err(|e| Problem::from(&CommandError::from(e)))?;
        let truncated = events.len() > EXPORT_EVENTS;
        let events = &events[..events.len().min(EXPORT_EVENTS)];
        Ok(json_response(
            200,
            &json!({
                "subject": subject,
                "stream_id": stream.to_string(),
                "key": key,
                "state": state,
                "events": events,
                "truncated": truncated,
            }),
        ))
    }
}
