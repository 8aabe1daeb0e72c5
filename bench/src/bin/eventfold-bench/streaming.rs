//! `eventfold-bench streaming`: figures for the streaming API on the local stack (or
//! `AWS_ENDPOINT_URL`), printed, never asserted: publish throughput to one partition and to
//! all of them (single records and batches), DynamoDB requests per record, consume requests
//! per returned record, and the long-poll wake-up after a publish.

use anyhow::{Context, Result};
use eventfold::Metadata;
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{DynamoEventStore, DynamoGroupStore, DynamoTopicCatalogue, RequestCounter};
use eventfold_local::httpc::Http;
use eventfold_local::{EsmOptions, LocalOptions, LocalStack};
use eventfold_streaming::{ConsumeRequest, NewRecord, Streams, StreamsConfig, TopicSettings};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type DynamoStreams = Streams<DynamoEventStore, DynamoTopicCatalogue, DynamoGroupStore>;

/// Concurrent publishers of a throughput run.
const PUBLISHERS: u64 = 4;

fn table(stack: &LocalStack, logical: &str) -> Result<String> {
    stack
        .template
        .tables()
        .into_iter()
        .find(|t| t.logical_id == logical)
        .map(|t| t.name)
        .with_context(|| format!("template has no {logical}"))
}

fn record(key: String, n: u64) -> NewRecord {
    NewRecord {
        event_type: "bench.record".into(),
        data: json!({"n": n, "payload": "x".repeat(200)}),
        key: Some(key),
        headers: BTreeMap::new(),
    }
}

/// Publishes `records` records from [`PUBLISHERS`] tasks in requests of `batch`; keys from
/// `key`. Returns records/s and DynamoDB requests per record.
async fn publish_run(
    streams: &Arc<DynamoStreams>,
    counter: &RequestCounter,
    tenant: &str,
    topic: &str,
    records: u64,
    batch: u64,
    key: fn(u64) -> String,
) -> Result<(f64, f64)> {
    let before = counter.get();
    let start = Instant::now();
    let per = records / PUBLISHERS;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let streams = streams.clone();
        let context = Metadata::root(tenant, "bench", format!("p{p}"));
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut n = p * per;
            while n < (p + 1) * per {
                let upto = (n + batch).min((p + 1) * per);
                let chunk: Vec<NewRecord> = (n..upto).map(|i| record(key(i), i)).collect();
                streams.publish(&context, &topic, chunk, None).await?;
                n = upto;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let sent = per * PUBLISHERS;
    Ok((
        sent as f64 / secs,
        (counter.get() - before) as f64 / sent as f64,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Runs the streaming benchmark and prints its figures.
pub async fn run(local: LocalOptions, records: u64, samples: usize) -> Result<()> {
    println!("eventfold bench streaming");
    println!("-------------------------");
    // No event-source pollers: the emulator serves the figures alone.
    let stack = cli::local::start_with(
        local,
        EsmOptions {
            enabled: false,
            ..EsmOptions::default()
        },
    )
    .await?;
    let counter = RequestCounter::new();
    let client = counted_dynamo_client(&stack.sdk, &counter);
    let streams = Arc::new(Streams::new(
        DynamoEventStore::new(client.clone(), table(&stack, "EventsTable")?),
        DynamoTopicCatalogue::new(client.clone(), table(&stack, "TopicsTable")?),
        DynamoGroupStore::new(client, table(&stack, "ConsumerGroupsTable")?),
        StreamsConfig {
            sleep: Some(eventfold_aws::tokio_backoff()),
            ..StreamsConfig::default()
        },
    ));
    let tenant = format!("bench{}", chrono::Utc::now().timestamp_millis());
    for (name, partitions) in [("one", 1), ("all", 8)] {
        let settings = TopicSettings {
            partitions,
            ..TopicSettings::default()
        };
        streams
            .create_topic(&tenant, "bench", name, settings)
            .await?;
    }
    for (label, topic) in [("1 partition ", "one"), ("8 partitions", "all")] {
        for batch in [1, 100] {
            let (rate, requests) =
                publish_run(&streams, &counter, &tenant, topic, records, batch, |i| {
                    format!("key-{i}")
                })
                .await?;
            println!(
                "publish, {label}, {PUBLISHERS} publishers, {batch:>3}/request: {rate:>7.0} records/s, {requests:>5.2} DynamoDB requests/record"
            );
        }
    }

    // Consume the 8-partition topic from the start, committing each page.
    for max in [10usize, 100] {
        let group = format!("g{max}");
        let before = counter.get();
        let mut returned = 0u64;
        loop {
            let request = ConsumeRequest {
                topic: "all".into(),
                group: group.clone(),
                max,
                wait: Duration::ZERO,
                auto_commit: true,
                member: None,
            };
            let got = streams.consume(&tenant, &request, None).await?;
            if got.records.is_empty() {
                break;
            }
            returned += got.records.len() as u64;
        }
        let requests = counter.get() - before;
        println!(
            "consume, 8 partitions, max={max:<3} auto_commit: {:>5.3} DynamoDB requests/returned record ({returned} records, {requests} requests)",
            requests as f64 / returned.max(1) as f64
        );
    }

    // Long-poll wake-up: a consumer waits over HTTP, a record is published, the time from
    // the publish's answer to the consumer's answer.
    let http = Http::new(&stack.api_url());
    let token = stack.gateway.auth().issue(
        &tenant,
        "bench",
        "events:read events:write events:admin",
        600,
    );
    let mut wakeups = Vec::new();
    for i in 0..samples {
        let group = format!("poll{i}");
        let seek = json!({"topic": "one", "group_id": group, "to": "latest"});
        http.post("/api/v1/events/consume/seek", Some(&token), &seek)
            .await?;
        let waiter = {
            let http = http.clone();
            let token = token.clone();
            let path = format!("/api/v1/events/consume?topic=one&group_id={group}&wait_ms=10000");
            tokio::spawn(async move {
                let reply = http.get(&path, Some(&token)).await;
                (reply, Instant::now())
            })
        };
        // Let the consumer settle into its poll before the record arrives.
        tokio::time::sleep(Duration::from_millis(300 + 37 * (i as u64 % 7))).await;
        let body =
            json!({"topic": "one", "event_type": "bench.wake", "key": "k", "data": {"i": i}});
        let published = http
            .post("/api/v1/events/publish", Some(&token), &body)
            .await?;
        anyhow::ensure!(published.status == 201, "publish: {}", published.json);
        let at = Instant::now();
        let (reply, woke) = waiter.await?;
        let reply = reply?;
        anyhow::ensure!(
            reply.json["records"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "the consumer woke without the record: {}",
            reply.json
        );
        wakeups.push(woke.saturating_duration_since(at));
    }
    wakeups.sort_unstable();
    println!(
        "long poll wake-up after a publish (HTTP, local, {samples} samples): p50 {:.0} ms, p95 {:.0} ms",
        percentile(&wakeups, 0.5).as_secs_f64() * 1000.0,
        percentile(&wakeups, 0.95).as_secs_f64() * 1000.0
    );
    stack.stop().await;
    Ok(())
}
