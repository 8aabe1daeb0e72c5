//! The event table of DESIGN §2: one item per commit, conditional `PutItem`, newest-first load.

use crate::dynamodb::{from_attr, item_size, n, s, to_attr};
use crate::faults::from_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use eventfold::store::validate_append;
use eventfold::{
    AppendOutcome, EventEnvelope, EventStore, ExpectedVersion, LoadOptions, LoadedStream, Metadata,
    Snapshot, StoreError,
};
use std::collections::HashMap;

/// The events table's TTL attribute (epoch seconds), set on streaming records only: their
/// topic's retention. Commits of aggregates never expire.
pub const EXPIRES_AT: &str = "expires_at";

/// DynamoDB's item size limit (400 KB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

type Item = HashMap<String, AttributeValue>;

/// Event store on a DynamoDB table keyed `stream_id` (S) + `version` (N, first event of the commit).
#[derive(Debug, Clone)]
pub struct DynamoEventStore {
    client: Client,
    table: String,
}

table_store!(DynamoEventStore);

/// A decoded commit item (shared with the stream-record decoder).
pub(crate) struct Commit {
    pub(crate) events: Vec<EventEnvelope>,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) last_version: u64,
}

fn ts(t: &DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

impl DynamoEventStore {
    /// The item of a commit (shared with the stream-record codec).
    pub(crate) fn encode(
        stream_id: &str,
        expected_version: u64,
        events: &[EventEnvelope],
        snapshot: Option<&Snapshot>,
    ) -> Result<Item, StoreError> {
        let metadata = &events[0].metadata;
        let list = events
            .iter()
            .map(|e| {
                Ok(AttributeValue::M(HashMap::from([
                    ("event_id".to_owned(), s(e.event_id.to_string())),
                    ("type".to_owned(), s(&e.event_type)),
                    ("schema_version".to_owned(), n(u64::from(e.schema_version))),
                    (
                        "data".to_owned(),
                        to_attr(&e.data).map_err(|e| StoreError::Invalid(e.into()))?,
                    ),
                    ("occurred_at".to_owned(), ts(&e.occurred_at)),
                ])))
            })
            .collect::<Result<_, StoreError>>()?;
        let mut metadata_map = HashMap::from([
            ("tenant".to_owned(), s(&metadata.tenant)),
            ("actor".to_owned(), s(&metadata.actor)),
            ("correlation_id".to_owned(), s(&metadata.correlation_id)),
            ("causation_id".to_owned(), s(&metadata.causation_id)),
            ("command_id".to_owned(), s(&metadata.command_id)),
        ]);
        // Absent rather than empty: commits written before traces existed look the same.
        if let Some(trace) = &metadata.trace {
            metadata_map.insert("trace".to_owned(), s(trace));
        }
        let mut item = HashMap::from([
            ("stream_id".to_owned(), s(stream_id)),
            ("version".to_owned(), n(expected_version + 1)),
            ("count".to_owned(), n(events.len() as u64)),
            ("events".to_owned(), AttributeValue::L(list)),
            ("metadata".to_owned(), AttributeValue::M(metadata_map)),
            ("committed_at".to_owned(), ts(&Utc::now())),
        ]);
        if let Some(snap) = snapshot {
            item.insert(
                "snapshot".to_owned(),
                AttributeValue::M(HashMap::from([
                    ("version".to_owned(), n(snap.version)),
                    ("state_schema".to_owned(), n(u64::from(snap.state_schema))),
                    (
                        "state".to_owned(),
                        to_attr(&snap.state).map_err(|e| StoreError::Invalid(e.into()))?,
                    ),
                ])),
            );
        }
        Ok(item)
    }

    /// Decodes a commit item (shared with the stream-record decoder).
    pub(crate) fn decode(
        stream_id: &str,
        item: &Item,
        with_events: bool,
    ) -> Result<Commit, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            stream_id: stream_id.to_owned(),
            detail,
        };
        let get_s = |m: &Item, k: &str| -> Result<String, StoreError> {
            match m.get(k) {
                Some(AttributeValue::S(v)) => Ok(v.clone()),
                _ => Err(corrupt(format!("attribute {k} missing or not a string"))),
            }
        };
        let get_n = |m: &Item, k: &str| -> Result<u64, StoreError> {
            match m.get(k) {
                Some(AttributeValue::N(v)) => v
                    .parse()
                    .map_err(|_| corrupt(format!("attribute {k}={v} is not a count"))),
                _ => Err(corrupt(format!("attribute {k} missing or not a number"))),
            }
        };
        let get_m = |m: &Item, k: &str| -> Result<Item, StoreError> {
            match m.get(k) {
                Some(AttributeValue::M(v)) => Ok(v.clone()),
                _ => Err(corrupt(format!("attribute {k} missing or not a map"))),
            }
        };
        let first = get_n(item, "version")?;
        let count = get_n(item, "count")?;
        let last_version = first + count.saturating_sub(1);
        let snapshot = match item.get("snapshot") {
            Some(AttributeValue::M(m)) => Some(Snapshot {
                version: get_n(m, "version")?,
                state_schema: u32::try_from(get_n(m, "state_schema")?)
                    .map_err(|_| corrupt("state_schema out of range".into()))?,
                state: from_attr(
                    m.get("state")
                        .ok_or_else(|| corrupt("snapshot without state".into()))?,
                )
                .map_err(|e| corrupt(e.to_string()))?,
            }),
            _ => None,
        };
        let mut events = Vec::new();
        if with_events {
            let md = get_m(item, "metadata")?;
            let metadata = Metadata {
                tenant: get_s(&md, "tenant")?,
                actor: get_s(&md, "actor")?,
                correlation_id: get_s(&md, "correlation_id")?,
                causation_id: get_s(&md, "causation_id")?,
                command_id: get_s(&md, "command_id")?,
                trace: match md.get("trace") {
                    Some(AttributeValue::S(t)) => Some(t.clone()),
                    _ => None,
                },
            };
            let Some(AttributeValue::L(list)) = item.get("events") else {
                return Err(corrupt("attribute events missing or not a list".into()));
            };
            if list.len() as u64 != count {
                return Err(corrupt(format!(
                    "commit at {first} says {count} events, holds {}",
                    list.len()
                )));
            }
            for (i, entry) in list.iter().enumerate() {
                let AttributeValue::M(e) = entry else {
                    return Err(corrupt("event entry is not a map".into()));
                };
                let occurred = get_s(e, "occurred_at")?;
                events.push(EventEnvelope {
                    event_id: get_s(e, "event_id")?
                        .parse()
                        .map_err(|_| corrupt("event_id is not a UUID".into()))?,
                    stream_id: stream_id.to_owned(),
                    version: first + i as u64,
                    event_type: get_s(e, "type")?,
                    schema_version: u32::try_from(get_n(e, "schema_version")?)
                        .map_err(|_| corrupt("schema_version out of range".into()))?,
                    data: from_attr(
                        e.get("data")
                            .ok_or_else(|| corrupt("event without data".into()))?,
                    )
                    .map_err(|e| corrupt(e.to_string()))?,
                    occurred_at: DateTime::parse_from_rfc3339(&occurred)
                        .map_err(|_| corrupt(format!("occurred_at {occurred} is not RFC 3339")))?
                        .with_timezone(&Utc),
                    metadata: metadata.clone(),
                });
            }
        }
        Ok(Commit {
            events,
            snapshot,
            last_version,
        })
    }

    /// One page of a query on `stream_id`; returns the items and where to go on from.
    async fn query_page(
        &self,
        stream_id: &str,
        condition: &str,
        bounds: &[(&str, u64)],
        forward: bool,
        limit: Option<i32>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .expression_attribute_values(":s", s(stream_id))
            .scan_index_forward(forward)
            .consistent_read(true)
            .set_limit(limit)
            .set_exclusive_start_key(start);
        if condition.contains("#v") {
            q = q.expression_attribute_names("#v", "version");
        }
        for (name, value) in bounds {
            q = q.expression_attribute_values(*name, n(*value));
        }
        let out = q.send().await.map_err(from_sdk)?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn load(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedStream, StoreError> {
        // Newest first: with snapshots every N events, the newest N commits always include the
        // latest snapshot, so the first page (Limit N) is usually the only request.
        let mut limit = match options.state_schema {
            Some(_) if options.snapshot_every > 0 => {
                Some(i32::try_from(options.snapshot_every.min(1000)).unwrap_or(1000))
            }
            _ => None,
        };
        let mut start = None;
        let mut requests = 0;
        let mut version = None;
        let mut snapshot = None;
        let mut commits = Vec::new();
        'pages: loop {
            let (items, next) = self
                .query_page(stream_id, "stream_id = :s", &[], false, limit, start.take())
                .await?;
            requests += 1;
            for item in &items {
                let head = Self::decode(stream_id, item, false)?;
                version.get_or_insert(head.last_version);
                if let Some(snap) = head.snapshot
                    && Some(snap.state_schema) == options.state_schema
                {
                    snapshot = Some(snap);
                    break 'pages;
                }
                commits.push(Self::decode(stream_id, item, true)?);
            }
            match next {
                Some(key) => start = Some(key),
                None => break,
            }
            // The hint was not enough (no usable snapshot near the head): read full pages.
            limit = None;
        }
        commits.reverse();
        let events: Vec<EventEnvelope> = commits.into_iter().flat_map(|c| c.events).collect();
        Ok(LoadedStream {
            version: version.unwrap_or(0),
            snapshot,
            events,
            requests,
        })
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let from = from_version.max(1);
        // Versions are stored as numbers the table compares as signed 64-bit: none is past
        // `i64::MAX`, so a range starting there is empty without a request.
        let to = to_version.unwrap_or(u64::MAX).min(i64::MAX as u64);
        let want = limit.unwrap_or(usize::MAX);
        if from > to || want == 0 {
            return Ok(Vec::new());
        }
        let keep = |e: &EventEnvelope| e.version >= from && e.version <= to;
        let mut out = Vec::new();
        let condition = "stream_id = :s AND #v BETWEEN :lo AND :hi";
        let page_limit = limit.map(|l| i32::try_from(l.min(1000)).unwrap_or(1000));
        let mut start = None;
        let mut first_page = true;
        while out.len() < want {
            let (items, next) = self
                .query_page(
                    stream_id,
                    condition,
                    &[(":lo", from), (":hi", to)],
                    true,
                    page_limit,
                    start.take(),
                )
                .await?;
            let mut page = Vec::new();
            for item in &items {
                page.extend(
                    Self::decode(stream_id, item, true)?
                        .events
                        .into_iter()
                        .filter(keep),
                );
            }
            if first_page && from > 1 && page.first().is_none_or(|e| e.version != from) {
                // `from` is inside an earlier commit (or gone): read the commit before it.
                // Usually a range starts at a commit, and this second request is not needed.
                let (before, _) = self
                    .query_page(
                        stream_id,
                        "stream_id = :s AND #v < :from",
                        &[(":from", from)],
                        false,
                        Some(1),
                        None,
                    )
                    .await?;
                for item in &before {
                    out.extend(
                        Self::decode(stream_id, item, true)?
                            .events
                            .into_iter()
                            .filter(keep),
                    );
                }
            }
            first_page = false;
            out.extend(page);
            match next {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        out.truncate(want);
        Ok(out)
    }

    async fn load_after(
        &self,
        stream_id: &str,
        version: ExpectedVersion,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        // After a lost race the winners are usually one or two commits: fetch them by key
        // (consistent GetItem, O(1) and cheaper than a Query), then query if far behind. The
        // version is a commit boundary (the type says so), so the next commit is keyed by
        // the version after it.
        let mut next = version.get() + 1;
        let mut out = Vec::new();
        for _ in 0..4 {
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("stream_id", s(stream_id))
                .key("version", n(next))
                .consistent_read(true)
                .send()
                .await
                .map_err(from_sdk)?;
            let Some(item) = got.item else {
                return Ok(out);
            };
            let commit = Self::decode(stream_id, &item, true)?;
            next = commit.last_version + 1;
            out.extend(commit.events);
        }
        out.extend(self.load_range(stream_id, next, None, None).await?);
        Ok(out)
    }

    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        self.put_commit(stream_id, expected, events, snapshot, None)
            .await
    }

    async fn head(&self, stream_id: &str) -> Result<u64, StoreError> {
        // The newest commit alone: one consistent Query of one item, whatever the length.
        let (items, _) = self
            .query_page(stream_id, "stream_id = :s", &[], false, Some(1), None)
            .await?;
        match items.first() {
            Some(item) => Ok(Self::decode(stream_id, item, false)?.last_version),
            None => Ok(0),
        }
    }

    async fn append_expiring(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<AppendOutcome, StoreError> {
        self.put_commit(stream_id, expected, events, None, expires_at)
            .await
    }
}

impl DynamoEventStore {
    /// For a version no store vouched for ([`ExpectedVersion::assumed`]): one read of the
    /// commit holding `version` (the newest starting at or before it), which must end exactly
    /// there and be the newest commit of the stream. The conditional `PutItem` sees only its
    /// own key, so without this an append after the middle of a commit would overlap it and
    /// one past the head would leave a hole. A vouched version needs no check: it is a
    /// boundary a store reported, and the put's condition catches a stream that moved on.
    async fn check_boundary_at_head(
        &self,
        stream_id: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        let conflict = || StoreError::Conflict {
            stream_id: stream_id.to_owned(),
            expected: version,
        };
        if version == 0 {
            return Ok(());
        }
        let (items, _) = self
            .query_page(
                stream_id,
                "stream_id = :s AND #v <= :e",
                &[(":e", version)],
                false,
                Some(1),
                None,
            )
            .await?;
        let Some(item) = items.first() else {
            return Err(conflict()); // past the head of an empty stream
        };
        if Self::decode(stream_id, item, false)?.last_version != version {
            return Err(conflict()); // inside that commit, or past its end (the head)
        }
        Ok(())
    }

    /// The conditional `PutItem` of a commit; `expires_at` sets the table's TTL attribute
    /// ([`EXPIRES_AT`], epoch seconds), which only streaming records carry.
    async fn put_commit(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<AppendOutcome, StoreError> {
        let expected_version = expected.get();
        validate_append(stream_id, expected_version, &events, snapshot.as_ref())?;
        if !expected.is_vouched() {
            self.check_boundary_at_head(stream_id, expected_version)
                .await?;
        }
        let mut item = Self::encode(stream_id, expected_version, &events, snapshot.as_ref())?;
        if let Some(at) = expires_at {
            item.insert(EXPIRES_AT.to_owned(), n(at.timestamp().max(0)));
        }
        let mut size = item_size(&item);
        if size > MAX_ITEM_BYTES && snapshot.is_some() {
            // A snapshot is an optimisation: drop it rather than the commit.
            tracing::warn!(
                stream_id,
                size,
                "snapshot dropped: commit would exceed the item limit"
            );
            item.remove("snapshot");
            size = item_size(&item);
        }
        if size > MAX_ITEM_BYTES {
            return Err(StoreError::TooLarge {
                stream_id: stream_id.to_owned(),
                size,
                limit: MAX_ITEM_BYTES,
            });
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(stream_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(AppendOutcome {
                version: expected_version + events.len() as u64,
            }),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(StoreError::Conflict {
                        stream_id: stream_id.to_owned(),
                        expected: expected_version,
                    })
                }
                _ => Err(from_sdk(e)),
            },
        }
    }
}
