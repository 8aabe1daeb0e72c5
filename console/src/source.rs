//! What the console reads from the stack, and how often: a [`Snapshot`] of the tables taken
//! by a few paginated `Scan`s, refreshed in the background.
//!
//! One refresh is one `Scan` of each of the events, read-models and dead-letters tables, each
//! paged by DynamoDB's 1 MB limit: `ceil(table bytes / 1 MB)` requests per table, whatever the
//! number of browsers (pages read the latest snapshot, never AWS). The events scan keeps, per
//! commit, its keys, times, metadata and event ids/types (no payloads, no snapshot states);
//! payloads are read on demand, one `Query` per stream shown. The read-models scan keeps
//! checkpoints and deadline entries, and counts documents (no document bodies).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use eventfold::Metadata;
use eventfold_consumers::deadletter::{DeadLetter, FailureNote};
use eventfold_consumers::projection::{ViewPointer, stored_name};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A DynamoDB item.
type Item = HashMap<String, AttributeValue>;

/// The tables the console reads (physical names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// The events table (`EVENTS_TABLE`).
    pub events: String,
    /// The read-models table (`READ_MODELS_TABLE`).
    pub read_models: String,
    /// The dead-letters table (`DEAD_LETTERS_TABLE`).
    pub dead_letters: String,
    /// The topics table (`TOPICS_TABLE`).
    pub topics: String,
    /// The consumer-groups table (`CONSUMER_GROUPS_TABLE`).
    pub groups: String,
    /// The stream publisher's function name (`STREAM_PUBLISHER_FUNCTION`), whose
    /// `IteratorAge` metric is its lag; without it the publisher's lag is unknown.
    pub publisher_function: Option<String>,
}

impl Tables {
    /// The names read through `lookup` (a function's environment: the variables the
    /// functions themselves read).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SourceError> {
        let get = |k: &'static str| {
            lookup(k)
                .filter(|v| !v.is_empty())
                .ok_or(SourceError::Missing(k))
        };
        Ok(Self {
            events: get("EVENTS_TABLE")?,
            read_models: get("READ_MODELS_TABLE")?,
            dead_letters: get("DEAD_LETTERS_TABLE")?,
            topics: get("TOPICS_TABLE")?,
            groups: get("CONSUMER_GROUPS_TABLE")?,
            publisher_function: lookup("STREAM_PUBLISHER_FUNCTION").filter(|v| !v.is_empty()),
        })
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A setting is missing.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// DynamoDB refused or failed a request.
    #[error("scan of {table} failed: {message}")]
    Aws {
        /// The table.
        table: String,
        /// The SDK's error, with its causes.
        message: String,
    },
}

/// One event of a commit, without its payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventRow {
    /// Event id.
    pub event_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version as written.
    pub schema_version: u32,
    /// When it was decided.
    pub occurred_at: DateTime<Utc>,
}

/// One commit of the events table, without payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRow {
    /// `{tenant}/{Category}-{id}`.
    pub stream_id: String,
    /// Version of its first event.
    pub version: u64,
    /// Its events (ids, types, times).
    pub events: Vec<EventRow>,
    /// Request context.
    pub metadata: Metadata,
    /// When it was written.
    pub committed_at: DateTime<Utc>,
    /// The version of the snapshot it carries, if any.
    pub snapshot: Option<u64>,
}

impl CommitRow {
    /// Version of its last event.
    pub fn last_version(&self) -> u64 {
        self.version + self.events.len().max(1) as u64 - 1
    }
}

/// A saga instance's deadline entry (`_saga#{saga}` items).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineRow {
    /// The saga's checkpoint name (e.g. `saga:OrderFulfilment`).
    pub saga: String,
    /// The saga stream.
    pub stream_id: String,
    /// When it must have moved on (`None`: it does not wait).
    pub due_at: Option<DateTime<Utc>>,
}

/// Everything the screens need, as of one refresh.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the refresh started.
    pub taken_at: DateTime<Utc>,
    /// How long it took.
    pub took: Duration,
    /// AWS requests it made.
    pub requests: u32,
    /// Commits per stream, oldest first.
    pub streams: BTreeMap<String, Vec<CommitRow>>,
    /// Where each event id is: (stream, index of the commit in its stream).
    pub event_at: HashMap<String, (String, usize)>,
    /// Checkpoints kept per (name, source stream): counter views and sagas (`_cp#{name}`).
    pub checkpoints: HashMap<(String, String), u64>,
    /// Stream views' document checkpoints per (view, `{tenant}/{key}`).
    pub doc_checkpoints: HashMap<(String, String), u64>,
    /// Documents per stored view (hidden `Null` ones included).
    pub doc_counts: BTreeMap<String, usize>,
    /// The version pointers stored, by view (a view without one is at version 1).
    pub pointers: BTreeMap<String, ViewPointer>,
    /// Saga deadline entries.
    pub deadlines: Vec<DeadlineRow>,
    /// Every dead letter, oldest failure first.
    pub letters: Vec<DeadLetter>,
    /// The consumers' failure notes still kept.
    pub notes: Vec<FailureNote>,
    /// The stream publisher's lag, from its `IteratorAge` metric.
    pub publisher: crate::iterator_age::PublisherAge,
}

impl Snapshot {
    /// The pointer of the stored view `view` (the initial one when none is stored).
    pub fn pointer(&self, view: &str) -> ViewPointer {
        self.pointers.get(view).cloned().unwrap_or_default()
    }

    /// The name the live version of `view` is stored under (itself for a consumer that is
    /// no view).
    pub fn live_name(&self, view: &str) -> String {
        stored_name(view, self.pointer(view).live)
    }

    /// The commit holding event `event_id`.
    pub fn commit_of_event(&self, event_id: &str) -> Option<&CommitRow> {
        let (stream, i) = self.event_at.get(event_id)?;
        self.streams.get(stream)?.get(*i)
    }

    /// Every commit, stream by stream.
    pub fn commits(&self) -> impl Iterator<Item = &CommitRow> {
        self.streams.values().flatten()
    }

    /// Indexes the events of `streams` by id and sorts each stream's commits.
    pub fn index(&mut self) {
        self.event_at.clear();
        for (stream, commits) in &mut self.streams {
            commits.sort_by_key(|c| c.version);
            for (i, c) in commits.iter().enumerate() {
                for e in &c.events {
                    self.event_at
                        .insert(e.event_id.clone(), (stream.clone(), i));
                }
            }
        }
    }
}

/// Reads the tables into [`Snapshot`]s.
#[derive(Debug, Clone)]
pub struct Source {
    client: Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    tables: Tables,
    /// Scan pages read by the snapshot being taken (or the last one), shared by clones.
    pages: Arc<AtomicU32>,
}

fn s(item: &Item, k: &str) -> Option<String> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn n(item: &Item, k: &str) -> Option<u64> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Decodes a commit item (payloads and snapshot states are not projected).
pub fn decode_commit(item: Item) -> Option<CommitRow> {
    let stream_id = s(&item, "stream_id")?;
    let version = n(&item, "version")?;
    let committed_at = s(&item, "committed_at").and_then(|t| time(&t))?;
    let snapshot = match item.get("snapshot") {
        Some(AttributeValue::M(m)) => n(m, "version"),
        _ => None,
    };
    let metadata: Metadata =
        serde_dynamo::aws_sdk_dynamodb_1::from_attribute_value(item.get("metadata")?.clone())
            .ok()?;
    let events: Vec<EventRow> =
        serde_dynamo::aws_sdk_dynamodb_1::from_attribute_value(item.get("events")?.clone()).ok()?;
    Some(CommitRow {
        stream_id,
        version,
        events,
        metadata,
        committed_at,
        snapshot,
    })
}

impl Source {
    /// Reads `tables` through the clients of `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig, tables: Tables) -> Self {
        Self {
            client: Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            tables,
            pages: Arc::default(),
        }
    }

    /// Scan pages the snapshot being taken has read so far (the last one's total once done):
    /// what a page shows while the first snapshot of a large stack is still being read.
    pub fn pages_read(&self) -> u32 {
        self.pages.load(Ordering::Relaxed)
    }

    /// The table names.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The DynamoDB client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every item of `table` (with `projection`), and the number of requests it took.
    async fn scan(
        &self,
        table: &str,
        projection: Option<(&str, &[(&str, &str)])>,
    ) -> Result<(Vec<Item>, u32), SourceError> {
        let (mut items, mut requests, mut start) = (Vec::new(), 0u32, None);
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take());
            if let Some((expr, names)) = projection {
                req = req.projection_expression(expr);
                for (k, v) in names {
                    req = req.expression_attribute_names(*k, *v);
                }
            }
            let out = req.send().await.map_err(|e| SourceError::Aws {
                table: table.to_owned(),
                message: eventfold_aws::diagnostic::cause_chain(&e),
            })?;
            requests += 1;
            self.pages.fetch_add(1, Ordering::Relaxed);
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok((items, requests)),
            }
        }
    }

    /// A fresh snapshot of the three tables.
    pub async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let started = std::time::Instant::now();
        self.pages.store(0, Ordering::Relaxed);
        let mut snap = Snapshot {
            taken_at: Utc::now(),
            ..Snapshot::default()
        };
        // The three scans (and the publisher's metric) are independent: run them at once.
        let publisher = async {
            match &self.tables.publisher_function {
                Some(f) => crate::iterator_age::read(&self.cloudwatch, f, snap.taken_at).await,
                None => crate::iterator_age::PublisherAge::Unknown,
            }
        };
        let (events, models, letters, publisher) = tokio::join!(
            self.scan(
                &self.tables.events,
                Some((
                    "stream_id, #v, events, metadata, committed_at, #snap.#v",
                    &[("#v", "version"), ("#snap", "snapshot")],
                )),
            ),
            self.scan(
                &self.tables.read_models,
                Some((
                    "pk, sk, #cp, #k, due_at, #v, #p",
                    &[
                        ("#cp", "checkpoint"),
                        ("#k", "kind"),
                        ("#v", "version"),
                        ("#p", "pointer"),
                    ],
                )),
            ),
            self.scan(&self.tables.dead_letters, None),
            publisher,
        );
        snap.publisher = publisher;
        let (events, r1) = events?;
        let (models, r2) = models?;
        let (letters, r3) = letters?;
        snap.requests = r1 + r2 + r3 + u32::from(self.tables.publisher_function.is_some());
        for item in events {
            if let Some(c) = decode_commit(item) {
                snap.streams.entry(c.stream_id.clone()).or_default().push(c);
            }
        }
        snap.index();
        for item in models {
            read_model_item(&mut snap, &item);
        }
        for item in letters {
            if let Some(l) = s(&item, "letter").and_then(|j| serde_json::from_str(&j).ok()) {
                snap.letters.push(l);
            } else if let Some(note) = s(&item, "note").and_then(|j| serde_json::from_str(&j).ok())
            {
                snap.notes.push(note);
            }
        }
        snap.letters.sort_by_key(|l| l.first_failure_at);
        snap.took = started.elapsed();
        Ok(snap)
    }
}

/// Files one read-models item into `snap`: a checkpoint (`_cp#{name}`), a saga deadline
/// entry (`_saga#{saga}`), a view pointer (`_view`), or a document (`{tenant}#{view}`).
pub fn read_model_item(snap: &mut Snapshot, item: &Item) {
    let (Some(pk), Some(sk)) = (s(item, "pk"), s(item, "sk")) else {
        return;
    };
    if let Some(name) = pk.strip_prefix("_cp#") {
        snap.checkpoints
            .insert((name.to_owned(), sk), n(item, "checkpoint").unwrap_or(0));
    } else if let Some(saga) = pk.strip_prefix("_saga#") {
        snap.deadlines.push(DeadlineRow {
            saga: saga.to_owned(),
            stream_id: sk,
            due_at: s(item, "due_at").and_then(|t| time(&t)),
        });
    } else if pk == "_view" {
        let pointer = s(item, "pointer").and_then(|p| serde_json::from_str(&p).ok());
        if let Some(pointer) = pointer {
            snap.pointers.insert(sk, pointer);
        }
    } else if pk.starts_with('_') {
        // Reserved items of other kinds: nothing to show.
    } else if let Some((tenant, view)) = pk.split_once('#') {
        *snap.doc_counts.entry(view.to_owned()).or_default() += 1;
        if let Some(cp) = n(item, "checkpoint").filter(|cp| *cp > 0) {
            snap.doc_checkpoints
                .insert((view.to_owned(), format!("{tenant}/{sk}")), cp);
        }
    }
}
