//! The command API: `POST /commands`, aggregate state (with time travel) and paged history.
//!
//! Owns request parsing for commands and the mapping of each route API Gateway matched to
//! its handling. Routes are the function's `HttpApi` events in `infra/template.yaml` (the one
//! route table, mirrored in [`ROUTE_KEYS`]): requests are dispatched on the `routeKey` and
//! `pathParameters` the gateway sends, never by parsing the path again. Which aggregates
//! exist and how their commands parse come from `shop::registry` (this crate names no shop
//! type): a request runs a plain generic async function for the aggregate its category
//! names ([`registry::visit_async`]); which commands clients may submit is decided here
//! ([`parse_client_command`]). Mechanics come from `eventfold`, AWS and the error-to-HTTP
//! mapping from `eventfold-aws`. [`build`] is the function's one constructor, from its settings and the SDK configuration;
//! `main.rs` and the local stack both run what it builds.
#![forbid(unsafe_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventfold::PageBudget;
use eventfold::SealingStore;
use eventfold::{
    CacheFor, CommandContext, CommandError, CommandExecutor, EventStore, ExecutorConfig, StreamId,
};
use eventfold_aws::config::ConfigError;
use eventfold_aws::http::{
    Caller, PAGE_BYTES, Problem, caller, correlation_id, json_response, route_key, trace_header,
};
use eventfold_aws::idempotency::http::optionally_guarded;
use eventfold_aws::keys::{SealedEventStore, key_ring_from_lookup};
use eventfold_aws::warmup::Warmed;
use eventfold_aws::{DynamoDbTable, DynamoEventStore, SdkConfig, StoreConfig, telemetry};
use eventfold_idempotency::{Idempotency, IdempotencyStore};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::json;
use shop::CommandParseError;
use shop::registry::{
    self, AsyncAggregateVisitor, RegisteredAggregate, ShopCaches, UnknownAggregate,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How long a command without `expected_version` keeps retrying lost races on a hot stream.
/// In Lambda the invocation's deadline (the function timeout), less [`ANSWER_MARGIN`], stops
/// it sooner; this bound keeps the answer inside API Gateway's 30 s integration timeout
/// wherever no deadline is known.
pub const RETRY_BUDGET: Duration = Duration::from_secs(25);
/// Time kept back from the Lambda deadline to answer.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Default and largest page of `/events`.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page of `/events`.
pub const MAX_PAGE: usize = 1000;
/// Events read from the store at a time while filling a page: a default page and the event
/// telling whether more follow in one read, and a page of large events (up to 400 KB each)
/// stops reading near its byte budget instead of holding 1000 of them in memory.
pub const READ_CHUNK: usize = DEFAULT_PAGE + 1;

/// Route key of `POST /commands`.
pub const SUBMIT_COMMAND: &str = "POST /api/v1/events/commands";
/// Route key of an aggregate's state.
pub const GET_AGGREGATE: &str = "GET /api/v1/events/aggregates/{aggregate_type}/{aggregate_id}";
/// Route key of an aggregate's history.
pub const LIST_AGGREGATE_EVENTS: &str =
    "GET /api/v1/events/aggregates/{aggregate_type}/{aggregate_id}/events";
/// Every route key this function serves (the template's `HttpApi` events of `CommandApiFunction`).
pub const ROUTE_KEYS: &[&str] = &[
    SUBMIT_COMMAND,
    GET_AGGREGATE,
    LIST_AGGREGATE_EVENTS,
    FORGET_SUBJECT,
    EXPORT_SUBJECT,
];

mod subjects;
pub use subjects::{EXPORT_SUBJECT, FORGET_SUBJECT};

/// The idempotency engine the command API uses, over any store.
pub type CommandIdempotency = Idempotency<Arc<dyn IdempotencyStore>>;

/// The command API over any event store (DynamoDB in Lambda, memory in unit tests), keeping
/// the warm states of every registered aggregate in [`ShopCaches`].
pub struct CommandApi<S> {
    executor: CommandExecutor<S, ShopCaches>,
    /// Honours `Idempotency-Key` on `POST /commands` when set.
    idempotency: Option<CommandIdempotency>,
    /// The byte budget of a history page ([`PAGE_BYTES`] unless set).
    page_bytes: usize,
    /// The key ring of the subject routes ([`subjects`]); they answer 503 without one.
    keys: Option<Arc<dyn eventfold::KeyRing>>,
}

/// The function as its `main.rs` and the local stack run it: the API on the DynamoDB event
/// store, and the endpoint it warms at init. Built by [`build`].
pub struct Function {
    api: CommandApi<SealedEventStore>,
}

/// The function's one constructor: reads its settings through `env` once (`EVENTS_TABLE`,
/// `SNAPSHOT_EVERY`, the idempotency settings: the process environment in Lambda, the
/// template's resolved environment locally) and builds its clients from `sdk`.
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Function, ConfigError> {
    let config = StoreConfig::from_lookup(&env)?;
    // Personal fields are sealed at the store (eventfold::sealing) with the key ring the
    // subject routes forget keys in.
    let keys = key_ring_from_lookup(sdk, &env)?;
    let store = SealingStore::new(
        DynamoEventStore::from_sdk(sdk, config.events_table),
        keys.clone(),
    );
    let executor = CommandExecutor::new(
        store,
        ExecutorConfig {
            snapshot_every: config.snapshot_every,
            backoff: Some(eventfold_aws::tokio_backoff()),
            retry_budget: Some(RETRY_BUDGET),
            ..ExecutorConfig::default()
        },
    )
    .caching()
    .with_upcasters(registry::upcasters());
    let api = CommandApi::new(executor).with_keys(keys);
    let api = match &config.idempotency {
        Some(settings) => api.with_idempotency(settings.engine(sdk)),
        None => api,
    };
    Ok(Function { api })
}

impl Function {
    /// Handles one HTTP request (see [`CommandApi::handle`]).
    pub async fn handle(&self, req: Request) -> Response<Body> {
        self.api.handle(req).await
    }

    /// The API.
    pub fn api(&self) -> &CommandApi<SealedEventStore> {
        &self.api
    }

    /// Warms the endpoint the requests use (the events table) at init.
    pub async fn warm_up(&self, sdk: &SdkConfig) -> Vec<Warmed> {
        let events = self.api.executor().store().inner().table();
        eventfold_aws::warm_up(sdk, &[&DynamoDbTable::events(events)]).await
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    aggregate_type: String,
    aggregate_id: String,
    #[serde(rename = "type")]
    command_type: String,
    #[serde(default)]
    data: serde_json::Value,
    expected_version: Option<u64>,
}

enum Route<'a> {
    Command,
    Forget(&'a str),
    Export(&'a str),
    State(&'a str, &'a str),
    Events(&'a str, &'a str),
}

/// The route API Gateway matched (`routeKey`, with its `pathParameters`); `None` for a route
/// this function does not serve.
fn route(req: &Request) -> Option<Route<'_>> {
    let param = |name: &str| req.path_parameters_ref().and_then(|p| p.first(name));
    let aggregate = || Some((param("aggregate_type")?, param("aggregate_id")?));
    match route_key(req)? {
        SUBMIT_COMMAND => Some(Route::Command),
        GET_AGGREGATE => aggregate().map(|(t, id)| Route::State(t, id)),
        LIST_AGGREGATE_EVENTS => aggregate().map(|(t, id)| Route::Events(t, id)),
        FORGET_SUBJECT => param("subject_id").map(Route::Forget),
        EXPORT_SUBJECT => param("subject_id").map(Route::Export),
        _ => None,
    }
}

/// The Lambda deadline of `req` (when the runtime gave one) less [`ANSWER_MARGIN`], as an
/// instant of this process's clock.
fn answer_by(req: &Request) -> Option<Instant> {
    let deadline = eventfold_aws::http::lambda_deadline(req)?;
    let left = (deadline - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(Instant::now() + left.saturating_sub(ANSWER_MARGIN))
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// The `outcome` dimension of a command the executor refused or failed.
fn command_outcome(e: &CommandError) -> &'static str {
    match e {
        CommandError::Rejected(_) => "rejected",
        CommandError::Conflict { .. } => "conflict",
        CommandError::TooLarge { .. } => "too_large",
        CommandError::Unavailable(_) => "unavailable",
        CommandError::Internal(_) => "error",
    }
}

/// The answer to a command that does not parse. An id its type refuses is the rejection of
/// its rule: answered (and counted) exactly as the executor's rejections are.
fn parse_error(command_type: &str, e: CommandParseError) -> Problem {
    match e {
        CommandParseError::UnknownType(m) => Problem::bad_request("unknown-command-type", m),
        CommandParseError::InvalidData(m) => Problem::bad_request("invalid-command-data", m),
        CommandParseError::Rejected(rejection) => {
            let e = CommandError::Rejected(rejection);
            telemetry::command_handled(command_type, command_outcome(&e), 0, false);
            Problem::from(&e)
        }
    }
}

fn unknown_aggregate(e: UnknownAggregate) -> Problem {
    Problem::bad_request("unknown-aggregate-type", e.to_string())
}

/// Builds the command a client submitted (`POST /commands`) for the aggregate `A`. An
/// aggregate that takes no commands from outside the system (a saga, whose commands are its
/// inputs) knows no command type here: [`CommandParseError::UnknownType`] (HTTP 400
/// `unknown-command-type`).
pub fn parse_client_command<A: RegisteredAggregate>(
    command_type: &str,
    data: serde_json::Value,
) -> Result<A::Command, CommandParseError> {
    if !A::ACCEPTS_EXTERNAL_COMMANDS || A::INTERNAL_COMMANDS.contains(&command_type) {
        return Err(CommandParseError::UnknownType(format!(
            "'{command_type}': {} accepts no commands over HTTP (the system writes its \
             streams; read them through the aggregates API)",
            A::CATEGORY
        )));
    }
    A::parse_command(command_type, data)
}

/// Parses and runs a command on the aggregate its category names.
struct Execute<'a, S> {
    api: &'a CommandApi<S>,
    stream: &'a StreamId,
    expected: Option<u64>,
    command_type: &'a str,
    data: serde_json::Value,
    context: &'a CommandContext,
    /// When conflict retries must stop so the answer still goes out in time.
    answer_by: Option<Instant>,
}

impl<S: EventStore> AsyncAggregateVisitor for Execute<'_, S> {
    type Output = Result<Response<Body>, Problem>;

    async fn visit<A: RegisteredAggregate>(self) -> Self::Output
    where
        ShopCaches: CacheFor<A>,
    {
        let command = parse_client_command::<A>(self.command_type, self.data)
            .and_then(|c| {
                A::check_stream(self.stream, &c).map_err(CommandParseError::Rejected)?;
                Ok(c)
            })
            .map_err(|e| parse_error(self.command_type, e))?;
        self.api
            .execute::<A>(
                self.command_type,
                self.stream,
                self.expected,
                &command,
                self.context,
                self.answer_by,
            )
            .await
    }
}

/// Loads and renders the state of a stream of the aggregate its category names.
struct LoadState<'a, S> {
    api: &'a CommandApi<S>,
    stream: &'a StreamId,
    version: Option<u64>,
}

impl<S: EventStore> AsyncAggregateVisitor for LoadState<'_, S> {
    type Output = Result<Response<Body>, Problem>;

    async fn visit<A: RegisteredAggregate>(self) -> Self::Output
    where
        ShopCaches: CacheFor<A>,
    {
        self.api.state::<A>(self.stream, self.version).await
    }
}

fn stream_of(caller: &Caller, aggregate_type: &str, id: &str) -> Result<StreamId, Problem> {
    StreamId::new(&caller.tenant, aggregate_type, id)
        .map_err(|e| Problem::bad_request("invalid-id", e.to_string()))
}

fn query_u64(req: &Request, name: &str) -> Result<Option<u64>, Problem> {
    let params = req.query_string_parameters_ref();
    match params.and_then(|p| p.first(name)) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            Problem::bad_request(
                "invalid-request",
                format!("query parameter '{name}' must be a non-negative integer"),
            )
        }),
    }
}

fn encode_cursor(next_version: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{next_version}"))
}

fn decode_cursor(cursor: &str) -> Result<u64, Problem> {
    let bad = || Problem::bad_request("invalid-cursor", "cursor is not one this API issued");
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad())?;
    text.strip_prefix("v1:")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(bad)
}

impl<S: EventStore> CommandApi<S> {
    /// An API deciding through `executor` (build it with `.caching()`).
    pub fn new(executor: CommandExecutor<S, ShopCaches>) -> Self {
        Self {
            executor,
            idempotency: None,
            page_bytes: PAGE_BYTES,
            keys: None,
        }
    }

    /// Serves the subject routes (forget, export) with `keys`: the key ring of the store's
    /// sealing, so a forget reaches the keys the store seals with.
    pub fn with_keys(mut self, keys: Arc<dyn eventfold::KeyRing>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Sets the byte budget of a history page (in [`eventfold::wire_len`] bytes), for tests
    /// that page through small events; a budget over [`PAGE_BYTES`] risks answers past
    /// Lambda's response limit.
    pub fn with_page_bytes(mut self, page_bytes: usize) -> Self {
        self.page_bytes = page_bytes;
        self
    }

    /// Honours the `Idempotency-Key` header of `POST /commands` through `idempotency`: a
    /// request without the header costs nothing extra.
    pub fn with_idempotency(mut self, idempotency: CommandIdempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// The executor (and through it the store).
    pub fn executor(&self) -> &CommandExecutor<S, ShopCaches> {
        &self.executor
    }

    /// Handles one HTTP request. Never fails: every outcome is a response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let correlation = correlation_id(&req);
        let route = route_key(&req).unwrap_or("-");
        let trace = trace_header(&req);
        let span = tracing::info_span!("request", route = %route, path = %path, correlation_id = %correlation, trace = trace.as_deref().unwrap_or("-"));
        async {
            match self.dispatch(&req, &correlation).await {
                Ok(resp) => resp,
                Err(problem) => problem.into_response(&path),
            }
        }
        .instrument(span)
        .await
    }

    async fn dispatch(&self, req: &Request, correlation: &str) -> Result<Response<Body>, Problem> {
        let caller = caller(req)?;
        match route(req) {
            Some(Route::Command) => {
                caller.require("events:write")?;
                let run = || self.command(req, &caller, correlation);
                optionally_guarded(self.idempotency.as_ref(), req, &caller, run).await
            }
            Some(Route::State(t, id)) => {
                caller.require("events:read")?;
                let stream = stream_of(&caller, t, id)?;
                let version = query_u64(req, "version")?;
                let load = LoadState {
                    api: self,
                    stream: &stream,
                    version,
                };
                registry::visit_async(t, load)
                    .await
                    .map_err(unknown_aggregate)?
            }
            Some(Route::Events(t, id)) => {
                caller.require("events:read")?;
                registry::aggregate(t).map_err(unknown_aggregate)?;
                let stream = stream_of(&caller, t, id)?;
                self.events(req, &stream).await
            }
            Some(Route::Forget(subject)) => self.forget(&caller, subject, correlation).await,
            Some(Route::Export(subject)) => self.export(&caller, subject).await,
            None => Err(Problem::not_found("no such route")),
        }
    }

    async fn command(
        &self,
        req: &Request,
        caller: &Caller,
        correlation: &str,
    ) -> Result<Response<Body>, Problem> {
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
        eventfold_aws::http::integral_numbers_as_integers(&mut json);
        let cmd: CommandRequest = serde_json::from_value(json)
            .map_err(|e| Problem::bad_request("invalid-request", e.to_string()))?;
        let stream = stream_of(caller, &cmd.aggregate_type, &cmd.aggregate_id)?;
        let command_id = uuid::Uuid::now_v7().to_string();
        let context = CommandContext {
            tenant: caller.tenant.clone(),
            actor: caller.actor.clone(),
            correlation_id: correlation.to_owned(),
            causation_id: command_id.clone(),
            command_id,
            // The commit keeps the request's trace: every message it causes joins it.
            trace: trace_header(req),
        };
        let span = tracing::info_span!("command", stream_id = %stream, command_type = %cmd.command_type, command_id = %context.command_id, causation_id = %context.causation_id);
        let run = Execute {
            api: self,
            stream: &stream,
            expected: cmd.expected_version,
            command_type: &cmd.command_type,
            data: cmd.data,
            context: &context,
            answer_by: answer_by(req),
        };
        let result = async {
            registry::visit_async(&cmd.aggregate_type, run)
                .await
                .map_err(unknown_aggregate)?
        }
        .instrument(span)
        .await;
        if let Err(p) = &result
            && p.status == 400
        {
            // The type may be anything the caller sent: not a dimension.
            telemetry::command_handled("-", "invalid", 0, false);
        }
        result
    }

    async fn execute<A: RegisteredAggregate>(
        &self,
        command_type: &str,
        stream: &StreamId,
        expected: Option<u64>,
        command: &A::Command,
        context: &CommandContext,
        answer_by: Option<Instant>,
    ) -> Result<Response<Body>, Problem>
    where
        ShopCaches: CacheFor<A>,
    {
        let out = self
            .executor
            .execute_within::<A>(stream, expected, command, context, answer_by)
            .await
            .map_err(|e| {
                telemetry::command_handled(
                    command_type,
                    command_outcome(&e),
                    0,
                    matches!(e, CommandError::Conflict { .. }),
                );
                Problem::from(&e)
            })?;
        telemetry::command_handled(
            command_type,
            "accepted",
            out.attempts.saturating_sub(1),
            false,
        );
        tracing::info!(
            version = out.version,
            events = out.events.len(),
            attempts = out.attempts,
            "command accepted"
        );
        let status = if out.created { 201 } else { 200 };
        let mut answer =
            json!({"stream_id": out.stream_id, "version": out.version, "events": out.events});
        // The answer may be kept by the idempotency store: it never holds personal values
        // (read them back through the aggregate or the subject export).
        eventfold::personal::withhold(&mut answer);
        Ok(json_response(status, &answer))
    }

    async fn state<A: RegisteredAggregate>(
        &self,
        stream: &StreamId,
        version: Option<u64>,
    ) -> Result<Response<Body>, Problem>
    where
        ShopCaches: CacheFor<A>,
    {
        let missing = || Problem::not_found(format!("stream {stream} does not exist"));
        let (at, state) = match version {
            Some(0) => {
                return Err(Problem::bad_request(
                    "invalid-request",
                    "version starts at 1",
                ));
            }
            Some(v) => {
                let state = self
                    .executor
                    .state_at::<A>(stream, v)
                    .await
                    .map_err(|e| Problem::from(&e))?;
                (
                    v,
                    state.ok_or_else(|| {
                        Problem::not_found(format!("stream {stream} has no version {v}"))
                    })?,
                )
            }
            None => {
                let (v, state) = self
                    .executor
                    .load::<A>(stream)
                    .await
                    .map_err(|e| Problem::from(&e))?;
                if v == 0 {
                    return Err(missing());
                }
                (v, state)
            }
        };
        Ok(json_response(
            200,
            &json!({"stream_id": stream.to_string(), "version": at, "state": state}),
        ))
    }

    async fn events(&self, req: &Request, stream: &StreamId) -> Result<Response<Body>, Problem> {
        let limit = match query_u64(req, "limit")? {
            None => DEFAULT_PAGE,
            Some(l) if (1..=MAX_PAGE as u64).contains(&l) => l as usize,
            Some(_) => {
                return Err(Problem::bad_request(
                    "invalid-request",
                    format!("limit must be 1..={MAX_PAGE}"),
                ));
            }
        };
        let cursor = req
            .query_string_parameters_ref()
            .and_then(|p| p.first("cursor"))
            .map(decode_cursor)
            .transpose()?;
        let from = match (cursor, query_u64(req, "from_version")?) {
            (_, Some(0)) => {
                return Err(Problem::bad_request(
                    "invalid-request",
                    "from_version starts at 1",
                ));
            }
            (Some(c), _) => c,
            (None, Some(v)) => v,
            (None, None) => 1,
        };
        let key = stream.to_string();
        let store = self.executor.store();
        let (events, next) = self.page(&key, from, limit).await?;
        if events.is_empty() {
            let exists = from > 1
                && !store
                    .load_range(&key, 1, Some(1), Some(1))
                    .await
                    .map_err(|e| Problem::from(&eventfold::CommandError::from(e)))?
                    .is_empty();
            if !exists {
                return Err(Problem::not_found(format!(
                    "stream {stream} does not exist"
                )));
            }
        }
        let next = next.map(encode_cursor);
        Ok(json_response(200, &json!({"events": events, "next": next})))
    }

    /// Up to `limit` events from version `from` within [`PAGE_BYTES`], and the version the
    /// next page starts at when more follow (the first event not taken: past the count, or
    /// the first that would pass the byte budget). Read [`READ_CHUNK`] events at a time, so
    /// a page of large events stops reading where the budget stops it.
    async fn page(
        &self,
        key: &str,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<eventfold::EventEnvelope>, Option<u64>), Problem> {
        let store = self.executor.store();
        let mut budget = PageBudget::new(self.page_bytes);
        let mut events = Vec::new();
        let mut at = from;
        loop {
            // One more than the page takes: it tells whether another page follows.
            let want = (limit + 1 - events.len()).min(READ_CHUNK);
            let chunk = store
                .load_range(key, at, None, Some(want))
                .await
                .map_err(|e| Problem::from(&eventfold::CommandError::from(e)))?;
            let last_chunk = chunk.len() < want;
            for event in chunk {
                if events.len() == limit || !budget.admit_item(&event) {
                    return Ok((events, Some(event.version)));
                }
                at = event.version + 1;
                events.push(event);
            }
            if last_chunk {
                return Ok((events, None));
            }
        }
    }
}
