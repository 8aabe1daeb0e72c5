//! The members' routes of a consumer group: join, heartbeat and leave (`events:read`, as a
//! consume), the member fields of consume and commit, and the group's description that
//! `GET /consume/lag` answers. The rules are [`eventfold_streaming::members`]'.

use super::{parse_settings, problem, query, required};
use eventfold::EventStore;
use eventfold_aws::http::{Problem, json_response};
use eventfold_streaming::members::DEFAULT_SESSION_TIMEOUT_MS;
use eventfold_streaming::{Assignment, GroupStore, MemberClaim, Streams, TopicCatalogue};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    topic: String,
    group_id: String,
    member_id: Option<String>,
    session_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    topic: String,
    group_id: String,
    member_id: String,
}

fn assignment(topic: &str, group: &str, a: &Assignment) -> Value {
    json!({
        "topic": topic,
        "group_id": group,
        "member_id": a.member_id,
        "generation": a.generation,
        "partitions": a.partitions,
        "session_timeout_ms": a.session_timeout_ms,
        "expires_at": a.expires_at,
    })
}

/// `POST /consume/join`: the member id, generation and partitions of the caller.
pub(super) async fn join<E: EventStore, C: TopicCatalogue, G: GroupStore>(
    streams: &Streams<E, C, G>,
    req: &Request,
    tenant: &str,
) -> Result<Response<Body>, Problem> {
    let body: JoinBody = parse_settings(req)?;
    let got = streams
        .join(
            tenant,
            &body.topic,
            &body.group_id,
            body.member_id.as_deref(),
            body.session_timeout_ms
                .unwrap_or(DEFAULT_SESSION_TIMEOUT_MS),
        )
        .await
        .map_err(problem)?;
    Ok(json_response(
        200,
        &assignment(&body.topic, &body.group_id, &got),
    ))
}

/// `POST /consume/heartbeat`: renews the session; answers the current assignment.
pub(super) async fn heartbeat<E: EventStore, C: TopicCatalogue, G: GroupStore>(
    streams: &Streams<E, C, G>,
    req: &Request,
    tenant: &str,
) -> Result<Response<Body>, Problem> {
    let body: MemberBody = parse_settings(req)?;
    let got = streams
        .heartbeat(tenant, &body.topic, &body.group_id, &body.member_id)
        .await
        .map_err(problem)?;
    Ok(json_response(
        200,
        &assignment(&body.topic, &body.group_id, &got),
    ))
}

/// `POST /consume/leave`: the generation after the member left.
pub(super) async fn leave<E: EventStore, C: TopicCatalogue, G: GroupStore>(
    streams: &Streams<E, C, G>,
    req: &Request,
    tenant: &str,
) -> Result<Response<Body>, Problem> {
    let body: MemberBody = parse_settings(req)?;
    let generation = streams
        .leave(tenant, &body.topic, &body.group_id, &body.member_id)
        .await
        .map_err(problem)?;
    Ok(json_response(
        200,
        &json!({"topic": body.topic, "group_id": body.group_id, "member_id": body.member_id, "generation": generation}),
    ))
}

/// `GET /consume/lag`: lag and owner per partition, the members and the generation.
pub(super) async fn lag<E: EventStore, C: TopicCatalogue, G: GroupStore>(
    streams: &Streams<E, C, G>,
    req: &Request,
    tenant: &str,
) -> Result<Response<Body>, Problem> {
    let topic = required(req, "topic")?;
    let group = required(req, "group_id")?;
    let d = streams
        .describe_group(tenant, topic, group)
        .await
        .map_err(problem)?;
    let total: u64 = d.partitions.iter().map(|p| p.lag).sum();
    Ok(json_response(
        200,
        &json!({
            "topic": topic,
            "group_id": group,
            "generation": d.generation,
            "members": d.members,
            "partitions": d.partitions,
            "total": total,
        }),
    ))
}

/// The member a consume names (`member_id`): it reads the partitions it owns in the current
/// generation, which the answer names (a member learns of a rebalance there too).
pub(super) fn consume_claim(req: &Request) -> Result<Option<MemberClaim>, Problem> {
    query(req, "member_id")
        .map(|id| {
            eventfold_streaming::members::check_member_id(id).map_err(problem)?;
            Ok(MemberClaim {
                member_id: id.to_owned(),
                generation: None,
            })
        })
        .transpose()
}

/// The member a commit names: `member_id` and `generation` together, or neither.
pub(super) fn commit_claim(
    member_id: Option<String>,
    generation: Option<u64>,
) -> Result<Option<MemberClaim>, Problem> {
    match (member_id, generation) {
        (Some(member_id), Some(g)) => {
            eventfold_streaming::members::check_member_id(&member_id).map_err(problem)?;
            Ok(Some(MemberClaim {
                member_id,
                generation: Some(g),
            }))
        }
        (None, None) => Ok(None),
        _ => Err(Problem::bad_request(
            "invalid-request",
            "member_id and generation go together",
        )),
    }
}
