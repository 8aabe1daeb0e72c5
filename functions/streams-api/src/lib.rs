//! The streaming API: topics, publish, consume with consumer groups (a single cursor, or
//! members that join and share the partitions: [`eventfold_streaming::members`]), lag and
//! history, under `/api/v1/events`.
//!
//! Owns the HTTP shape of [`eventfold_streaming::Streams`]: parameter and body parsing,
//! scopes (`events:read` to read and consume, `events:write` to publish, `events:admin` to
//! create topics and seek groups), cursors, and the mapping of each route API Gateway
//! matched (its `routeKey`, mirrored in [`ROUTE_KEYS`]) to its handling. It is its own
//! function, not routes of command-api and query-api, because a consume long-polls up to
//! 20 s (this function alone needs a timeout past that) and writes group offsets on a read
//! (`auto_commit`). Mechanics are `eventfold`'s, AWS and the error mapping
//! `eventfold-aws`'s. [`build`] is the function's one constructor; `main.rs` and the local
//! stack both run what it builds. It names no shop type.
#![forbid(unsafe_code)]

mod groups;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use eventfold::{EventStore, Metadata};
use eventfold_aws::config::ConfigError;
use eventfold_aws::http::{
    Caller, Problem, caller, correlation_id, json_response, route_key, trace_header,
};
use eventfold_aws::idempotency::http::optionally_guarded;
use eventfold_aws::warmup::Warmed;
use eventfold_aws::{
    DynamoDbTable, DynamoEventStore, DynamoGroupStore, DynamoTopicCatalogue, SdkConfig,
    StreamingConfig, telemetry,
};
use eventfold_idempotency::{Idempotency, IdempotencyStore};
use eventfold_streaming::{
    ConsumeRequest, GroupStore, HistoryQuery, MAX_BATCH, NewRecord, Offsets, SeekTo,
    StreamingError, Streams, StreamsConfig, TopicCatalogue, TopicSettings,
};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Time kept back from the Lambda deadline to answer.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);
/// Largest accepted request body: a full batch of records at their size limit does not fit;
/// a batch is bounded by this first.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default page of `GET /topics`.
pub const DEFAULT_TOPIC_PAGE: usize = 50;
/// Largest page of `GET /topics`.
pub const MAX_TOPIC_PAGE: usize = 100;
/// Default `max` of a consume.
pub const DEFAULT_MAX: usize = 100;
/// Default page of `GET /history`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// Route key of the topic list.
pub const LIST_TOPICS: &str = "GET /api/v1/events/topics";
/// Route key of a topic creation.
pub const CREATE_TOPIC: &str = "POST /api/v1/events/topics";
/// Route key of one topic.
pub const GET_TOPIC: &str = "GET /api/v1/events/topics/{topic}";
/// Route key of a publish.
pub const PUBLISH: &str = "POST /api/v1/events/publish";
/// Route key of a consume.
pub const CONSUME: &str = "GET /api/v1/events/consume";
/// Route key of a commit.
pub const COMMIT: &str = "POST /api/v1/events/consume/commit";
/// Route key of a seek.
pub const SEEK: &str = "POST /api/v1/events/consume/seek";
/// Route key of a member's join.
pub const JOIN: &str = "POST /api/v1/events/consume/join";
/// Route key of a member's heartbeat.
pub const HEARTBEAT: &str = "POST /api/v1/events/consume/heartbeat";
/// Route key of a member's leave.
pub const LEAVE: &str = "POST /api/v1/events/consume/leave";
/// Route key of a group's lag.
pub const LAG: &str = "GET /api/v1/events/consume/lag";
/// Route key of the history.
pub const HISTORY: &str = "GET /api/v1/events/history";
/// Every route key this function serves (the template's `HttpApi` events of `StreamsApiFunction`).
pub const ROUTE_KEYS: &[&str] = &[
    LIST_TOPICS,
    CREATE_TOPIC,
    GET_TOPIC,
    PUBLISH,
    CONSUME,
    COMMIT,
    SEEK,
    JOIN,
    HEARTBEAT,
    LEAVE,
    LAG,
    HISTORY,
];

/// The idempotency engine publish uses, over any store.
pub type PublishIdempotency = Idempotency<Arc<dyn IdempotencyStore>>;

/// The API on the DynamoDB tables.
pub type DynamoStreamsApi = StreamsApi<DynamoEventStore, DynamoTopicCatalogue, DynamoGroupStore>;

/// The streaming API over any stores (DynamoDB in Lambda, memory in unit tests).
pub struct StreamsApi<E, C, G> {
    streams: Streams<E, C, G>,
    idempotency: Option<PublishIdempotency>,
}

/// The function as its `main.rs` and the local stack run it: the API on the DynamoDB
/// tables, and the endpoint it warms at init. Built by [`build`].
pub struct Function {
    api: DynamoStreamsApi,
}

/// The function's one constructor: reads its settings through `env` once (`EVENTS_TABLE`,
/// `TOPICS_TABLE`, `CONSUMER_GROUPS_TABLE`, the idempotency settings: the process environment
/// in Lambda, the template's resolved environment locally) and builds its clients from `sdk`.
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Function, ConfigError> {
    let config = StreamingConfig::from_lookup(env)?;
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let streams = Streams::new(
        DynamoEventStore::new(client.clone(), &config.events_table),
        DynamoTopicCatalogue::new(client.clone(), &config.topics_table),
        DynamoGroupStore::new(client, &config.groups_table),
        StreamsConfig {
            sleep: Some(eventfold_aws::tokio_backoff()),
            // Consume and history answers stay under Lambda's response limit.
            page_bytes: eventfold_aws::http::PAGE_BYTES,
            ..StreamsConfig::default()
        },
    );
    let api = StreamsApi::new(streams);
    let api = match &config.idempotency {
        Some(settings) => api.with_idempotency(settings.engine(sdk)),
        None => api,
    };
    Ok(Function { api })
}

impl Function {
    /// Handles one HTTP request (see [`StreamsApi::handle`]).
    pub async fn handle(&self, req: Request) -> Response<Body> {
        self.api.handle(req).await
    }

    /// Warms the endpoint the requests use (the events table) at init.
    pub async fn warm_up(&self, sdk: &SdkConfig) -> Vec<Warmed> {
        let events = self.api.streams().store().table();
        eventfold_aws::warm_up(sdk, &[&DynamoDbTable::events(events)]).await
    }
}

fn problem(e: StreamingError) -> Problem {
    Problem::from(&e)
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// The JSON body as `T`: 413 past [`MAX_BODY_BYTES`], 400 when malformed or of the wrong shape.
fn parse_body<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, Problem> {
    parse_body_with(req, |_| ())
}

/// [`parse_body`] of a body made of settings and offsets only (no caller data), where an
/// integral float (`4.0`) is the integer it is, as JSON Schema's `integer` says.
fn parse_settings<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, Problem> {
    parse_body_with(req, eventfold_aws::http::integral_numbers_as_integers)
}

fn parse_body_with<T: for<'de> Deserialize<'de>>(
    req: &Request,
    normalize: impl FnOnce(&mut serde_json::Value),
) -> Result<T, Problem> {
    let body = body_bytes(req);
    if body.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            413,
            "payload-too-large",
            "Payload too large",
            format!("body of {} bytes exceeds {MAX_BODY_BYTES}", body.len()),
        ));
    }
    let mut json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("malformed-json", e.to_string()))?;
    normalize(&mut json);
    serde_json::from_value(json).map_err(|e| Problem::bad_request("invalid-request", e.to_string()))
}

fn query<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query_string_parameters_ref()
        .and_then(|p| p.first(name))
}

fn required<'a>(req: &'a Request, name: &str) -> Result<&'a str, Problem> {
    query(req, name).ok_or_else(|| {
        Problem::bad_request(
            "invalid-request",
            format!("query parameter '{name}' is required"),
        )
    })
}

fn query_number(req: &Request, name: &str) -> Result<Option<u64>, Problem> {
    query(req, name)
        .map(|v| {
            v.parse().map_err(|_| {
                Problem::bad_request(
                    "invalid-request",
                    format!("query parameter '{name}' must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

fn query_time(req: &Request, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    query(req, name)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    Problem::bad_request(
                        "invalid-request",
                        format!("query parameter '{name}' must be an RFC 3339 time"),
                    )
                })
        })
        .transpose()
}

fn query_bool(req: &Request, name: &str) -> Result<bool, Problem> {
    match query(req, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Problem::bad_request(
            "invalid-request",
            format!("query parameter '{name}' must be true or false"),
        )),
    }
}

/// A size parameter within `1..=max` (`default` when absent).
fn query_size(req: &Request, name: &str, default: usize, max: usize) -> Result<usize, Problem> {
    match query_number(req, name)? {
        None => Ok(default),
        Some(v) if (1..=max as u64).contains(&v) => Ok(v as usize),
        Some(_) => Err(Problem::bad_request(
            "invalid-request",
            format!("{name} must be 1..={max}"),
        )),
    }
}

fn bad_cursor() -> Problem {
    Problem::bad_request("invalid-cursor", "cursor is not one this API issued")
}

fn encode_cursor(prefix: &str, payload: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{prefix}:{payload}"))
}

fn decode_cursor(prefix: &str, cursor: &str) -> Result<String, Problem> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad_cursor())?;
    let text = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    text.strip_prefix(prefix)
        .and_then(|t| t.strip_prefix(':'))
        .map(str::to_owned)
        .ok_or_else(bad_cursor)
}

/// `{"0": 12, "3": 40}` as offsets: keys are partition numbers.
fn offsets_from(map: BTreeMap<String, u64>) -> Result<Offsets, Problem> {
    map.into_iter()
        .map(|(p, o)| {
            let p = p.parse::<u32>().map_err(|_| {
                Problem::bad_request("out-of-range", format!("'{p}' is not a partition number"))
            })?;
            Ok((p, o))
        })
        .collect()
}

/// The Lambda deadline of `req` less [`ANSWER_MARGIN`], on this process's clock.
fn answer_by(req: &Request) -> Option<Instant> {
    let deadline = eventfold_aws::http::lambda_deadline(req)?;
    let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Some(Instant::now() + left.saturating_sub(ANSWER_MARGIN))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    #[serde(alias = "topic")]
    name: String,
    partitions: Option<u32>,
    retention_days: Option<u32>,
    description: Option<String>,
}

/// One record (`{topic, event_type, data, key?, headers?}`) or a batch (`{topic, records}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: String,
    event_type: Option<String>,
    data: Option<Value>,
    key: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    records: Option<Vec<NewRecord>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    topic: String,
    group_id: String,
    offsets: BTreeMap<String, u64>,
    member_id: Option<String>,
    generation: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeekBody {
    topic: String,
    group_id: String,
    to: String,
    timestamp: Option<DateTime<Utc>>,
}

impl<E: EventStore, C: TopicCatalogue, G: GroupStore> StreamsApi<E, C, G> {
    /// An API over `streams`.
    pub fn new(streams: Streams<E, C, G>) -> Self {
        Self {
            streams,
            idempotency: None,
        }
    }

    /// Honours `Idempotency-Key` on publish through `idempotency`.
    pub fn with_idempotency(mut self, idempotency: PublishIdempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// The streaming behaviour (and through it the stores).
    pub fn streams(&self) -> &Streams<E, C, G> {
        &self.streams
    }

    /// Handles one HTTP request. Never fails: every outcome is a response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let correlation = correlation_id(&req);
        let route = route_key(&req).unwrap_or("-");
        let trace = trace_header(&req);
        let span = tracing::info_span!("request", route = %route, path = %path, correlation_id = %correlation, trace = trace.as_deref().unwrap_or("-"));
        let response = async {
            match self.dispatch(&req, &correlation).await {
                Ok(resp) => resp,
                Err(problem) => problem.into_response(&path),
            }
        }
        .instrument(span)
        .await;
        // Publishes, commits, seeks and auto-commits all race on versions: one count for all.
        let races = self.streams.take_contention();
        telemetry::contention(races.lost, races.retried);
        response
    }

    async fn dispatch(&self, req: &Request, correlation: &str) -> Result<Response<Body>, Problem> {
        let caller = caller(req)?;
        let tenant = caller.tenant.as_str();
        match route_key(req) {
            Some(LIST_TOPICS) => {
                caller.require("events:read")?;
                self.list_topics(req, tenant).await
            }
            Some(CREATE_TOPIC) => {
                caller.require("events:admin")?;
                self.create_topic(req, &caller).await
            }
            Some(GET_TOPIC) => {
                caller.require("events:read")?;
                let name = req
                    .path_parameters_ref()
                    .and_then(|p| p.first("topic"))
                    .ok_or_else(|| Problem::not_found("no such route"))?;
                let info = self
                    .streams
                    .topic_info(tenant, name)
                    .await
                    .map_err(problem)?;
                Ok(json_response(200, &info))
            }
            Some(PUBLISH) => {
                caller.require("events:write")?;
                let run = || self.publish(req, &caller, correlation);
                optionally_guarded(self.idempotency.as_ref(), req, &caller, run).await
            }
            Some(CONSUME) => {
                caller.require("events:read")?;
                self.consume(req, tenant).await
            }
            Some(COMMIT) => {
                caller.require("events:read")?;
                let body: CommitBody = parse_settings(req)?;
                let offsets = offsets_from(body.offsets)?;
                let claim = groups::commit_claim(body.member_id, body.generation)?;
                let committed = self
                    .streams
                    .commit_as(
                        tenant,
                        &body.topic,
                        &body.group_id,
                        &offsets,
                        claim.as_ref(),
                    )
                    .await
                    .map_err(problem)?;
                Ok(json_response(
                    200,
                    &json!({"topic": body.topic, "group_id": body.group_id, "committed": committed}),
                ))
            }
            Some(SEEK) => {
                caller.require("events:admin")?;
                let body: SeekBody = parse_settings(req)?;
                let to = match (body.to.as_str(), body.timestamp) {
                    ("earliest", None) => SeekTo::Earliest,
                    ("latest", None) => SeekTo::Latest,
                    ("timestamp", Some(t)) => SeekTo::Timestamp(t),
                    _ => {
                        return Err(Problem::bad_request(
                            "invalid-request",
                            "to is earliest, latest, or timestamp with a timestamp",
                        ));
                    }
                };
                let committed = self
                    .streams
                    .seek(tenant, &body.topic, &body.group_id, to)
                    .await
                    .map_err(problem)?;
                Ok(json_response(
                    200,
                    &json!({"topic": body.topic, "group_id": body.group_id, "committed": committed}),
                ))
            }
            Some(JOIN) => {
                caller.require("events:read")?;
                groups::join(&self.streams, req, tenant).await
            }
            Some(HEARTBEAT) => {
                caller.require("events:read")?;
                groups::heartbeat(&self.streams, req, tenant).await
            }
            Some(LEAVE) => {
                caller.require("events:read")?;
                groups::leave(&self.streams, req, tenant).await
            }
            Some(LAG) => {
                caller.require("events:read")?;
                groups::lag(&self.streams, req, tenant).await
            }
            Some(HISTORY) => {
                caller.require("events:read")?;
                self.history(req, tenant).await
            }
            _ => Err(Problem::not_found("no such route")),
        }
    }

    async fn list_topics(&self, req: &Request, tenant: &str) -> Result<Response<Body>, Problem> {
        let limit = query_size(req, "limit", DEFAULT_TOPIC_PAGE, MAX_TOPIC_PAGE)?;
        let after = query(req, "cursor")
            .map(|c| decode_cursor("t1", c))
            .transpose()?;
        let page = self
            .streams
            .list_topics(tenant, after.as_deref(), limit)
            .await
            .map_err(problem)?;
        let next = page.next_after.map(|n| encode_cursor("t1", &n));
        Ok(json_response(
            200,
            &json!({"topics": page.topics, "next": next}),
        ))
    }

    async fn create_topic(
        &self,
        req: &Request,
        caller: &Caller,
    ) -> Result<Response<Body>, Problem> {
        let body: CreateTopic = parse_settings(req)?;
        let defaults = TopicSettings::default();
        let settings = TopicSettings {
            partitions: body.partitions.unwrap_or(defaults.partitions),
            retention_days: body.retention_days.unwrap_or(defaults.retention_days),
            description: body.description.unwrap_or_default(),
        };
        let (topic, created) = self
            .streams
            .create_topic(&caller.tenant, &caller.actor, &body.name, settings)
            .await
            .map_err(problem)?;
        Ok(json_response(if created { 201 } else { 200 }, &topic))
    }

    async fn publish(
        &self,
        req: &Request,
        caller: &Caller,
        correlation: &str,
    ) -> Result<Response<Body>, Problem> {
        let body: PublishBody = parse_body(req)?;
        let single = body.records.is_none();
        let records = match (body.records, body.event_type, body.data) {
            (Some(records), None, None) if body.key.is_none() && body.headers.is_none() => records,
            (None, Some(event_type), Some(data)) => vec![NewRecord {
                event_type,
                data,
                key: body.key,
                headers: body.headers.unwrap_or_default(),
            }],
            _ => {
                return Err(Problem::bad_request(
                    "invalid-request",
                    format!(
                        "a publish is {{topic, event_type, data, key?, headers?}} or {{topic, records: [1..={MAX_BATCH}]}}"
                    ),
                ));
            }
        };
        let command_id = uuid::Uuid::now_v7().to_string();
        let context = Metadata {
            tenant: caller.tenant.clone(),
            actor: caller.actor.clone(),
            correlation_id: correlation.to_owned(),
            causation_id: command_id.clone(),
            command_id,
            // The records keep the request's trace: the fan-out and its consumers join it.
            trace: trace_header(req),
        };
        let placed = self
            .streams
            .publish(&context, &body.topic, records, answer_by(req))
            .await
            .map_err(problem)?;
        telemetry::records_published(placed.len());
        tracing::info!(topic = %body.topic, records = placed.len(), "published");
        let mut out = json!({"topic": body.topic, "records": placed});
        if single && let (Value::Object(map), Some(first)) = (&mut out, placed.first()) {
            map.insert("partition".into(), first.partition.into());
            map.insert("offset".into(), first.offset.into());
            map.insert("event_id".into(), first.event_id.to_string().into());
        }
        Ok(json_response(201, &out))
    }

    async fn consume(&self, req: &Request, tenant: &str) -> Result<Response<Body>, Problem> {
        let topic = required(req, "topic")?;
        let group = required(req, "group_id")?;
        let max = match query_number(req, "max")? {
            None => DEFAULT_MAX,
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        };
        let wait_ms = query_number(req, "wait_ms")?.unwrap_or(0);
        let request = ConsumeRequest {
            topic: topic.to_owned(),
            group: group.to_owned(),
            max,
            wait: Duration::from_millis(wait_ms),
            auto_commit: query_bool(req, "auto_commit")?,
            member: groups::consume_claim(req)?,
        };
        let got = self
            .streams
            .consume(tenant, &request, answer_by(req))
            .await
            .map_err(problem)?;
        telemetry::consumed(got.records.len());
        let mut out = json!({"topic": topic, "group_id": group, "records": got.records, "committed": got.committed});
        if let (Value::Object(map), Some(claim), Some(generation)) =
            (&mut out, &request.member, got.generation)
        {
            map.insert("member_id".into(), claim.member_id.clone().into());
            map.insert("generation".into(), generation.into());
        }
        Ok(json_response(200, &out))
    }

    async fn history(&self, req: &Request, tenant: &str) -> Result<Response<Body>, Problem> {
        let after = match query(req, "cursor") {
            None => None,
            Some(c) => {
                let text = decode_cursor("h1", c)?;
                let map: BTreeMap<String, u64> =
                    serde_json::from_str(&text).map_err(|_| bad_cursor())?;
                Some(offsets_from(map).map_err(|_| bad_cursor())?)
            }
        };
        let q = HistoryQuery {
            topic: required(req, "topic")?.to_owned(),
            event_type: query(req, "event_type").map(str::to_owned),
            key: query(req, "key").map(str::to_owned),
            since: query_time(req, "since")?,
            until: query_time(req, "until")?,
            limit: query_size(
                req,
                "limit",
                DEFAULT_HISTORY_LIMIT,
                eventfold_streaming::MAX_HISTORY_LIMIT,
            )?,
            after,
        };
        let page = self.streams.history(tenant, &q).await.map_err(problem)?;
        let next = page
            .next
            .map(|n| {
                let map: BTreeMap<String, u64> =
                    n.iter().map(|(p, o)| (p.to_string(), *o)).collect();
                serde_json::to_string(&map).map(|t| encode_cursor("h1", &t))
            })
            .transpose()
            .map_err(|e| Problem::new(500, "internal", "Internal error", e.to_string()))?;
        Ok(json_response(
            200,
            &json!({"topic": q.topic, "records": page.records, "next": next}),
        ))
    }
}
