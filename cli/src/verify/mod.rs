//! `eventfold verify`: one real order through a deployed stack, hop by hop, with the
//! operator's credentials: the stack's outputs, the command API, the commit in the events
//! table, the fan-out (stream -> SNS -> SQS) to both consumers, the projector's view, the saga
//! taking the order to confirmed, and the dead letters still empty. Each hop is printed with
//! its latency; the first that fails ends the run, named, with what the stack shows about
//! why (a failure note, a dead letter, queue depths).
//!
//! It observes without interfering: the consumers' queues are only measured
//! (`GetQueueAttributes`), never received from; a consumer's having got a message shows in
//! what it wrote (a read-model checkpoint, the saga's log, a failure note).
//!
//! What stays behind: events are immutable, so the run's order, its stock and the saga's log
//! stay in the events table, and the projector's documents in the read models, all under the
//! tenant [`TENANT`] with ids `verify-<run>`, apart from every real tenant. Nothing else is
//! created (no idempotency keys); failure notes of a failed run expire after 14 days.

pub mod api;
pub mod observe;

use anyhow::{Result, bail};
use api::Api;
use observe::{REQUIRED_OUTPUTS, Resources};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The tenant of every verify run (tokens minted for the local stack name it; a token given
/// for a deployed stack must carry it too to find the run's data under it).
pub const TENANT: &str = "eventfold-verify";

/// The hops, in order, as printed and as named on failure.
pub mod hop {
    /// `DescribeStacks`: the outputs `verify` needs.
    pub const OUTPUTS: &str = "stack outputs";
    /// Stock and the order's commands accepted by the HTTP API.
    pub const COMMANDS: &str = "command API";
    /// The order's last commit read back from the events table.
    pub const EVENTS_TABLE: &str = "events table";
    /// Both consumers got the order's events (stream -> SNS -> SQS).
    pub const FAN_OUT: &str = "fan-out";
    /// The projector wrote the order's `order-summary` document.
    pub const PROJECTOR: &str = "projector";
    /// The saga confirmed the order.
    pub const SAGA: &str = "saga";
    /// No dead letter: DLQs and the stream's failure queue empty, none of this run's streams
    /// in the dead-letters table.
    pub const DEAD_LETTERS: &str = "dead letters";
}

/// How to verify.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CloudFormation stack.
    pub stack: String,
    /// The bearer token for the HTTP API (read and write scopes, tenant [`TENANT`]).
    pub token: String,
    /// How long the asynchronous hops may take together (from the order's placement).
    pub timeout: Duration,
    /// How often to look again.
    pub poll: Duration,
}

/// One hop's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Its name ([`hop`]).
    pub name: &'static str,
    /// How long it took (for the asynchronous hops: since the order was placed).
    pub latency: Duration,
    /// What it showed, or why it failed.
    pub detail: String,
    /// Whether it passed.
    pub ok: bool,
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<13} {:>6} ms  {}",
            if self.ok { "ok  " } else { "FAIL" },
            self.name,
            self.latency.as_millis(),
            self.detail
        )
    }
}

/// The run: every hop done, the last one failed when the run failed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The hops in order.
    pub hops: Vec<Hop>,
}

impl Report {
    /// The first failed hop, if any.
    pub fn failed(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| !h.ok)
    }
}

/// A hop's failure: its message.
struct Failed(String);

type Step<T> = std::result::Result<T, Failed>;

fn fail<T>(message: impl Into<String>) -> Step<T> {
    Err(Failed(message.into()))
}

/// Whether a consumer's error is a permission problem: retries will not mend it, so the hop
/// fails at once instead of waiting for the timeout.
fn denied(error: &str) -> bool {
    error.contains("AccessDenied") || error.contains("not authorized")
}

/// Runs one order through the stack `options.stack` that `sdk` reaches, calling `print` with
/// each hop as it completes.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    options: &Options,
    mut print: impl FnMut(&Hop),
) -> Report {
    let mut report = Report::default();
    let mut record = |name: &'static str, started: Instant, result: Step<String>| {
        let (detail, ok) = match result {
            Ok(detail) => (detail, true),
            Err(Failed(detail)) => (detail, false),
        };
        let hop = Hop {
            name,
            latency: started.elapsed(),
            detail,
            ok,
        };
        print(&hop);
        report.hops.push(hop);
        ok
    };
    steps(sdk, options, &mut record).await;
    report
}

/// The hops in order, each handed to `record` (which says whether it passed); stops at the
/// first failure: the later hops depend on it.
async fn steps(
    sdk: &aws_config::SdkConfig,
    options: &Options,
    record: &mut impl FnMut(&'static str, Instant, Step<String>) -> bool,
) {
    let started = Instant::now();
    let resources = match observe::outputs(sdk, &options.stack).await {
        Ok(outputs) => {
            let missing: Vec<&str> = REQUIRED_OUTPUTS
                .into_iter()
                .filter(|k| !outputs.contains_key(*k))
                .collect();
            if missing.is_empty() {
                Ok(Resources {
                    sdk: sdk.clone(),
                    outputs,
                })
            } else {
                Err(Failed(format!(
                    "{} lacks the outputs {missing:?} (deployed from an older template?)",
                    options.stack
                )))
            }
        }
        Err(e) => Err(Failed(format!("{e:#}"))),
    };
    let resources = match resources {
        Ok(r) => {
            record(
                hop::OUTPUTS,
                started,
                Ok(format!(
                    "{} outputs; API {}",
                    r.outputs.len(),
                    r.output("ApiUrl")
                )),
            );
            r
        }
        Err(e) => {
            record(hop::OUTPUTS, started, Err(e));
            return;
        }
    };
    let started = Instant::now();
    let run = match Run::new(resources, options) {
        Ok(run) => run,
        Err(e) => {
            record(hop::COMMANDS, started, Err(e));
            return;
        }
    };
    let placed = match run.commands().await {
        Ok((version, detail)) => {
            record(hop::COMMANDS, started, Ok(detail));
            version
        }
        Err(e) => {
            record(hop::COMMANDS, started, Err(e));
            return;
        }
    };
    let placed_at = Instant::now();
    let deadline = placed_at + options.timeout;
    if !record(hop::EVENTS_TABLE, placed_at, run.committed(placed).await) {
        return;
    }
    if !record(hop::FAN_OUT, placed_at, run.fanned_out(deadline).await) {
        return;
    }
    if !record(
        hop::PROJECTOR,
        placed_at,
        run.projected(placed, deadline).await,
    ) {
        return;
    }
    if !record(hop::SAGA, placed_at, run.confirmed(deadline).await) {
        return;
    }
    let started = Instant::now();
    record(hop::DEAD_LETTERS, started, run.no_dead_letters().await);
}

/// One run's order, stock and clients.
struct Run {
    resources: Resources,
    api: Api,
    options: Options,
    order: String,
    sku: String,
}

const COMMANDS: &str = "/api/v1/events/commands";

impl Run {
    fn new(resources: Resources, options: &Options) -> Step<Self> {
        let run = format!("verify-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"));
        Ok(Self {
            api: Api::new(resources.output("ApiUrl"), &options.token)
                .map_err(|e| Failed(format!("{e:#}")))?,
            resources,
            options: options.clone(),
            order: run.clone(),
            sku: run,
        })
    }

    fn stream(&self, category: &str, id: &str) -> String {
        format!("{TENANT}/{category}-{id}")
    }

    /// Sends one command; its status, version and latency, or why it was refused.
    async fn send(
        &self,
        aggregate: &str,
        id: &str,
        command: &str,
        data: Value,
    ) -> Step<(u64, String)> {
        let api = &self.api;
        let body =
            json!({"aggregate_type": aggregate, "aggregate_id": id, "type": command, "data": data});
        let started = Instant::now();
        let reply = api
            .post(COMMANDS, &body)
            .await
            .map_err(|e| Failed(format!("{command}: {e:#}")))?;
        if !reply.ok() {
            let hint = match reply.status {
                401 => " (the token was refused: expired, wrong issuer or audience?)",
                403 => " (the token lacks a scope: events:write is needed)",
                _ => "",
            };
            return fail(format!(
                "{aggregate}/{id} {command} -> {}{hint}: {}",
                reply.status,
                reply.text.trim()
            ));
        }
        let version = reply.json["version"].as_u64().unwrap_or(0);
        Ok((
            version,
            format!(
                "{command} {} v{version} {} ms",
                reply.status,
                started.elapsed().as_millis()
            ),
        ))
    }

    /// Stock for the run's SKU, then the order created, given an item and placed (by card:
    /// the saga confirms it without waiting for a payment). The placed version.
    async fn commands(&self) -> Step<(u64, String)> {
        let (_, stock) = self
            .send(
                "Inventory",
                &self.sku,
                "ReceiveStock",
                json!({"quantity": 1}),
            )
            .await?;
        let (_, create) = self
            .send(
                "Order",
                &self.order,
                "CreateOrder",
                json!({"customer_id": TENANT}),
            )
            .await?;
        let item = json!({"sku": self.sku, "quantity": 1, "unit_price": 100});
        let (_, add) = self.send("Order", &self.order, "AddItem", item).await?;
        let (placed, place) = self
            .send(
                "Order",
                &self.order,
                "PlaceOrder",
                json!({"payment_method": "card"}),
            )
            .await?;
        Ok((
            placed,
            format!("Order/{}: {stock}; {create}; {add}; {place}", self.order),
        ))
    }

    /// The placing commit is in the events table.
    async fn committed(&self, placed: u64) -> Step<String> {
        let stream = self.stream("Order", &self.order);
        let latest = self
            .resources
            .latest_version(&stream)
            .await
            .map_err(|e| Failed(format!("{e:#}")))?;
        if latest < placed {
            return fail(format!(
                "{stream} is at version {latest} in {}, the API answered {placed}",
                self.resources.output("EventsTableName")
            ));
        }
        Ok(format!(
            "{stream} at version {latest} in {}",
            self.resources.output("EventsTableName")
        ))
    }

    /// Polls `check` until it gives a result or the deadline passes (`None` then).
    async fn until<T>(
        &self,
        deadline: Instant,
        mut check: impl AsyncFnMut() -> Step<Option<T>>,
    ) -> Step<Option<T>> {
        loop {
            if let Some(v) = check().await? {
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }

    /// What the projector shows of the order's stream: its document's checkpoint (0: none)
    /// and its failure notes.
    async fn projector(&self) -> Step<(u64, Option<Value>, Vec<String>)> {
        let stream = self.stream("Order", &self.order);
        let doc = self
            .resources
            .document(TENANT, shop::views::ORDER_SUMMARY, &self.order)
            .await
            .map_err(|e| Failed(format!("reading the read models: {e:#}")))?;
        let notes = self.notes(projector::CONSUMER, &stream).await?;
        Ok(match doc {
            Some((data, checkpoint)) => (checkpoint, Some(data), notes),
            None => (0, None, notes),
        })
    }

    async fn notes(&self, consumer: &str, stream: &str) -> Step<Vec<String>> {
        Ok(self
            .resources
            .notes(consumer, stream)
            .await
            .map_err(|e| Failed(format!("reading failure notes: {e:#}")))?
            .into_iter()
            .map(|n| {
                format!(
                    "{consumer} failed {} v{}: {}",
                    stream,
                    n.version.unwrap_or(0),
                    n.error
                )
            })
            .collect())
    }

    /// The saga's side: the events of its log for this order (0: it never started) and its
    /// failure notes on the order's stream.
    async fn saga(&self) -> Step<(u64, Vec<String>)> {
        let log = self
            .resources
            .latest_version(&self.stream("OrderFulfilment", &self.order))
            .await
            .map_err(|e| Failed(format!("{e:#}")))?;
        let notes = self
            .notes(saga::CONSUMER, &self.stream("Order", &self.order))
            .await?;
        Ok((log, notes))
    }

    /// Both consumers got the order's events: each wrote something for it (a document or
    /// the saga's log), or a failure note (delivered, then failed: the next hops say).
    async fn fanned_out(&self, deadline: Instant) -> Step<String> {
        let seen = self
            .until(deadline, async || {
                let (checkpoint, _, projector_notes) = self.projector().await?;
                let (log, saga_notes) = self.saga().await?;
                let projector = checkpoint > 0 || !projector_notes.is_empty();
                let saga = log > 0 || !saga_notes.is_empty();
                Ok((projector && saga).then_some(()))
            })
            .await?;
        if seen.is_some() {
            return Ok("the order's events reached the projector's and the saga's queues".into());
        }
        let (checkpoint, _, notes) = self.projector().await?;
        let (log, saga_notes) = self.saga().await?;
        let mut why = Vec::new();
        if checkpoint == 0 && notes.is_empty() {
            why.push(format!(
                "nothing of the order reached the projector ({})",
                self.queue("ProjectorQueueUrl").await
            ));
        }
        if log == 0 && saga_notes.is_empty() {
            why.push(format!(
                "nothing of the order reached the saga ({})",
                self.queue("SagaQueueUrl").await
            ));
        }
        why.push(format!(
            "stream failure queue: {}",
            self.queue("StreamFailureQueueUrl").await
        ));
        fail(format!(
            "within {:?}: {}",
            self.options.timeout,
            why.join("; ")
        ))
    }

    /// A queue's depth, described (or why it could not be read).
    async fn queue(&self, output: &str) -> String {
        match self.resources.depth(output).await {
            Ok((visible, in_flight, delayed)) => {
                format!("{output}: {visible} waiting, {in_flight} in flight, {delayed} delayed")
            }
            Err(e) => format!("{output}: {e:#}"),
        }
    }

    /// The projector's `order-summary` document has the placed order.
    async fn projected(&self, placed: u64, deadline: Instant) -> Step<String> {
        let done = self
            .until(deadline, async || {
                let (checkpoint, data, notes) = self.projector().await?;
                if checkpoint >= placed {
                    return Ok(Some(format!(
                        "order-summary/{} at checkpoint {checkpoint}, status {}",
                        self.order,
                        data.unwrap_or_default()["status"]
                    )));
                }
                if let Some(n) = notes.iter().find(|n| denied(n)) {
                    return fail(format!("the projector is denied: {n}"));
                }
                Ok(None)
            })
            .await?;
        match done {
            Some(detail) => Ok(detail),
            None => {
                let (checkpoint, _, notes) = self.projector().await?;
                let why = notes
                    .last()
                    .cloned()
                    .unwrap_or_else(|| "no failure note".into());
                fail(format!(
                    "order-summary/{} at checkpoint {checkpoint} < {placed} after {:?}: {why}; {}",
                    self.order,
                    self.options.timeout,
                    self.queue("ProjectorDeadLetterQueueUrl").await
                ))
            }
        }
    }

    /// The saga confirmed the order (or why not: its outcome, its notes).
    async fn confirmed(&self, deadline: Instant) -> Step<String> {
        let api = &self.api;
        let path = format!("/api/v1/events/aggregates/Order/{}", self.order);
        let done = self
            .until(deadline, async || {
                let r = api.get(&path).await.map_err(|e| Failed(format!("{e:#}")))?;
                let status = r.json["state"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match status.as_str() {
                    "Confirmed" => return Ok(Some(format!("Order/{} Confirmed", self.order))),
                    "Cancelled" => {
                        return fail(format!(
                            "the saga cancelled Order/{}: {}",
                            self.order, r.json["state"]["cancel_reason"]
                        ));
                    }
                    _ => {}
                }
                let (_, notes) = self.saga().await?;
                if let Some(n) = notes.iter().find(|n| denied(n)) {
                    return fail(format!("the saga is denied: {n}"));
                }
                Ok(None)
            })
            .await?;
        match done {
            Some(detail) => Ok(detail),
            None => {
                let (log, notes) = self.saga().await?;
                let why = notes
                    .last()
                    .cloned()
                    .unwrap_or_else(|| "no failure note".into());
                fail(format!(
                    "Order/{} not confirmed after {:?} (saga log at version {log}): {why}; {}",
                    self.order,
                    self.options.timeout,
                    self.queue("SagaDeadLetterQueueUrl").await
                ))
            }
        }
    }

    /// The dead-letter queues and the stream's failure queue are empty, and no stream of
    /// this run has a dead letter.
    async fn no_dead_letters(&self) -> Step<String> {
        let mut problems = Vec::new();
        for output in [
            "ProjectorDeadLetterQueueUrl",
            "SagaDeadLetterQueueUrl",
            "StreamFailureQueueUrl",
        ] {
            match self.resources.depth(output).await {
                Ok((0, 0, 0)) => {}
                Ok((v, f, d)) => problems.push(format!(
                    "{output} holds {} messages (`eventfold dlq list` shows the letters)",
                    v + f + d
                )),
                Err(e) => problems.push(format!("{output}: {e:#}")),
            }
        }
        for stream in [
            self.stream("Order", &self.order),
            self.stream("Inventory", &self.sku),
            self.stream("OrderFulfilment", &self.order),
        ] {
            match self.resources.dead_letters(TENANT, &stream).await {
                Ok(letters) => problems.extend(letters),
                Err(e) => problems.push(format!("dead letters of {stream}: {e:#}")),
            }
        }
        if problems.is_empty() {
            Ok(
                "dead-letter queues and stream failure queue empty; no dead letter for this run"
                    .into(),
            )
        } else {
            fail(problems.join("; "))
        }
    }
}

/// The error `eventfold verify` exits with: the first failed hop, named.
pub fn outcome(report: &Report) -> Result<()> {
    if let Some(h) = report.failed() {
        bail!("verify failed at hop \"{}\": {}", h.name, h.detail);
    }
    Ok(())
}

/// What a run leaves in the stack (printed after a successful run).
pub const LEFT_BEHIND: &str = "left behind (events are immutable): the run's order, stock and saga log in the events table and their read-model documents, under tenant eventfold-verify, ids verify-<run>";
