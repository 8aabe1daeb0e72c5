//! Fixtures (the source events of requests) and the redelivery-chaos driver of the toy saga.

use super::*;
use chrono::Utc;
use eventfold::aggregate::Aggregate;
use eventfold::envelope::{EventEnvelope, Metadata, NewEvent, StreamId};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The source events of request `id` of `tenant`, versions `1..`: a draft, a note, the
/// submission and, when `approved`, the approval. Their correlation id is `corr-{id}`.
pub fn request(
    tenant: &str,
    id: &str,
    from: &str,
    to: &str,
    amount: i64,
    approved: bool,
) -> Vec<EventEnvelope> {
    let stream = StreamId::new(tenant, REQUEST, id).unwrap_or_else(|e| panic!("{e}"));
    let mut parts = vec![
        ("Drafted", json!({"from": from, "to": to, "amount": amount})),
        ("Noted", json!({"text": "please"})),
        ("Submitted", json!({})),
    ];
    if approved {
        parts.push(("Approved", json!({})));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (event_type, data))| {
            NewEvent {
                event_type: event_type.into(),
                schema_version: 1,
                data,
            }
            .into_envelope(
                &stream,
                i as u64 + 1,
                Utc::now(),
                Metadata {
                    tenant: tenant.into(),
                    actor: "requester".into(),
                    correlation_id: format!("corr-{id}"),
                    causation_id: format!("req-{id}"),
                    command_id: format!("req-{id}-{i}"),
                    trace: None,
                },
            )
        })
        .collect()
}

/// The approval of request `id` as its event at `version`.
pub fn approval(tenant: &str, id: &str, version: u64) -> EventEnvelope {
    let stream = StreamId::new(tenant, REQUEST, id).unwrap_or_else(|e| panic!("{e}"));
    NewEvent {
        event_type: "Approved".into(),
        schema_version: 1,
        data: json!({}),
    }
    .into_envelope(
        &stream,
        version,
        Utc::now(),
        Metadata {
            tenant: tenant.into(),
            actor: "approver".into(),
            correlation_id: format!("corr-{id}"),
            causation_id: format!("approve-{id}"),
            command_id: format!("approve-{id}"),
            trace: None,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Redelivery chaos
// ---------------------------------------------------------------------------------------------

/// What [`redelivery_chaos`] delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChaosReport {
    /// Notifications handed to the runner.
    pub delivered: usize,
    /// Of those, duplicates (at or below the checkpoint).
    pub duplicates: usize,
    /// Copies dropped.
    pub dropped: usize,
    /// Events the runner read from the store (gaps filled, histories).
    pub events_read: usize,
    /// Ticks run.
    pub ticks: usize,
}

/// Runs five transfers of `tenant` through `runner` as an unreliable bus would deliver their
/// notifications, and checks that every step had exactly one effect.
///
/// Each round announces every event not yet announced, of every request and account stream:
/// three copies of each, shuffled within their stream, a tenth of the copies dropped except
/// those of a stream's last event, the streams interleaved at random. When a round finds
/// nothing new, one tick past the deadline runs (the unapproved transfer times out) and the
/// rounds go on until nothing moves. Then:
///
/// - `t1`, `t2` (approved) are done, `t3` (never approved) compensated after its deadline,
///   `t4` (from an empty account) failed, `t5` (to an account that does not exist)
///   compensated after the refused credit;
/// - every account stream holds exactly one debit, credit or refund per transfer step, the
///   balances add up, and no instance is left in the deadline index.
pub async fn redelivery_chaos<E, R>(
    runner: &eventfold_consumers::saga::SagaRunner<Transfer, E, R>,
    tenant: &str,
    seed: u64,
) -> ChaosReport
where
    E: eventfold::EventStore,
    R: eventfold_consumers::projection::ReadModelStore + eventfold_consumers::saga::DeadlineIndex,
{
    chaos(runner, tenant, seed, false).await
}

/// [`redelivery_chaos`], the copies handed over as a queue hands a batch's message group:
/// one to five copies of one stream at a time, through `begin`, `handle_group_in` (the
/// instances they feed run at once) and `commit`.
pub async fn redelivery_chaos_in_groups<E, R>(
    runner: &eventfold_consumers::saga::SagaRunner<Transfer, E, R>,
    tenant: &str,
    seed: u64,
) -> ChaosReport
where
    E: eventfold::EventStore,
    R: eventfold_consumers::projection::ReadModelStore + eventfold_consumers::saga::DeadlineIndex,
{
    chaos(runner, tenant, seed, true).await
}

async fn chaos<E, R>(
    runner: &eventfold_consumers::saga::SagaRunner<Transfer, E, R>,
    tenant: &str,
    seed: u64,
    grouped: bool,
) -> ChaosReport
where
    E: eventfold::EventStore,
    R: eventfold_consumers::projection::ReadModelStore + eventfold_consumers::saga::DeadlineIndex,
{
    use eventfold_consumers::Notification;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let executor = runner.executor();
    let store = executor.store();
    let stream = |category: &str, id: &str| {
        StreamId::new(tenant, category, id).unwrap_or_else(|e| panic!("{e}"))
    };
    for (account, balance) in [("rich", 1000), ("poor", 0), ("x", 0), ("y", 0)] {
        executor
            .execute::<Account>(
                &stream(Account::CATEGORY, account),
                None,
                &AccountCommand::Open { balance },
                &Metadata::root(tenant, "tester", format!("open-{account}")),
            )
            .await
            .unwrap_or_else(|e| panic!("open {account}: {e}"));
    }
    let transfers = [
        ("t1", "rich", "x", 100, true),
        ("t2", "rich", "y", 50, true),
        ("t3", "rich", "x", 30, false),
        ("t4", "poor", "x", 10, true),
        ("t5", "rich", "ghost", 20, true),
    ];
    for (id, from, to, amount, approved) in transfers {
        for e in request(tenant, id, from, to, amount, approved) {
            store
                .append(
                    &e.stream_id.clone(),
                    eventfold::ExpectedVersion::assumed(e.version - 1),
                    vec![e],
                    None,
                )
                .await
                .unwrap_or_else(|err| panic!("append request {id}: {err}"));
        }
    }
    let mut watched: Vec<String> = transfers
        .iter()
        .map(|t| stream(REQUEST, t.0).to_string())
        .collect();
    watched.extend(["rich", "poor", "x", "y"].map(|a| stream(Account::CATEGORY, a).to_string()));

    let mut report = ChaosReport::default();
    let mut announced: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let mut lanes: Vec<Vec<Notification>> = Vec::new();
        for s in &watched {
            let from = announced.get(s).copied().unwrap_or(0) + 1;
            let fresh = store
                .load_range(s, from, None, None)
                .await
                .unwrap_or_else(|e| panic!("read {s}: {e}"));
            let Some(last) = fresh.last().map(|e| e.version) else {
                continue;
            };
            announced.insert(s.clone(), last);
            let mut lane = Vec::new();
            for e in &fresh {
                for _ in 0..3 {
                    if e.version != last && rng.random_bool(0.1) {
                        report.dropped += 1;
                        continue;
                    }
                    lane.push(Notification::of(e).unwrap_or_else(|err| panic!("{err}")));
                }
            }
            lane.shuffle(&mut rng);
            lanes.push(lane);
        }
        if lanes.is_empty() {
            if report.ticks > 0 {
                break;
            }
            let timeout = chrono::TimeDelta::from_std(runner.config().timeout)
                .unwrap_or_else(|e| panic!("{e}"));
            let ticked = runner
                .tick(Utc::now() + timeout + chrono::TimeDelta::seconds(1))
                .await
                .unwrap_or_else(|e| panic!("tick: {e}"));
            assert_eq!(ticked.timed_out, 1, "only t3 waits: {ticked:?}");
            assert!(ticked.failed.is_empty(), "{ticked:?}");
            report.ticks += 1;
            continue;
        }
        // Interleave the streams at random, each lane in its own (shuffled) order.
        while !lanes.is_empty() {
            let i = rng.random_range(0..lanes.len());
            let take = if grouped {
                rng.random_range(1..=5usize).min(lanes[i].len())
            } else {
                1
            };
            let group: Vec<Notification> = lanes[i].drain(..take).collect();
            if lanes[i].is_empty() {
                lanes.swap_remove(i);
            }
            let handled = if grouped {
                let batch = runner
                    .begin(&group)
                    .await
                    .unwrap_or_else(|e| panic!("begin: {e}"));
                let (handled, failed) = runner.handle_group_in(&batch, &group).await;
                if let Some((k, e)) = failed {
                    panic!("{}@{}: {e}", group[k].stream_id, group[k].version);
                }
                runner
                    .commit(&batch)
                    .await
                    .unwrap_or_else(|e| panic!("commit: {e}"));
                handled
            } else {
                let n = &group[0];
                vec![
                    runner
                        .handle(n)
                        .await
                        .unwrap_or_else(|e| panic!("{}@{}: {e}", n.stream_id, n.version)),
                ]
            };
            for h in handled {
                report.delivered += 1;
                report.duplicates += usize::from(h.duplicate);
                report.events_read += h.events_read;
            }
        }
    }

    let saga = |id: &str| stream(Transfer::CATEGORY, id);
    let phases: Vec<(String, Phase)> = {
        let mut out = Vec::new();
        for t in &transfers {
            let (_, s) = executor
                .load::<Transfer>(&saga(t.0))
                .await
                .unwrap_or_else(|e| panic!("load {}: {e}", t.0));
            out.push((t.0.to_owned(), s.phase));
        }
        out
    };
    assert_eq!(
        phases,
        [
            ("t1".to_owned(), Phase::Done),
            ("t2".to_owned(), Phase::Done),
            ("t3".to_owned(), Phase::Compensated),
            ("t4".to_owned(), Phase::Failed),
            ("t5".to_owned(), Phase::Compensated),
        ]
    );
    let mut effects: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for account in ["rich", "poor", "x", "y"] {
        let events = store
            .load_range(
                &stream(Account::CATEGORY, account).to_string(),
                1,
                None,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("read {account}: {e}"));
        for e in events.iter().skip(1) {
            let transfer = e.data["transfer"].as_str().unwrap_or_default().to_owned();
            *effects
                .entry((account.to_owned(), e.event_type.clone(), transfer))
                .or_default() += 1;
        }
    }
    let want: BTreeMap<(String, String, String), usize> = [
        ("rich", "Debited", "t1"),
        ("x", "Credited", "t1"),
        ("rich", "Debited", "t2"),
        ("y", "Credited", "t2"),
        ("rich", "Debited", "t3"),
        ("rich", "Refunded", "t3"),
        ("rich", "Debited", "t5"),
        ("rich", "Refunded", "t5"),
    ]
    .into_iter()
    .map(|(a, t, id)| ((a.to_owned(), t.to_owned(), id.to_owned()), 1))
    .collect();
    assert_eq!(effects, want, "exactly one effect per step");
    for (account, balance) in [("rich", 850), ("poor", 0), ("x", 100), ("y", 50)] {
        let (_, s) = executor
            .load::<Account>(&stream(Account::CATEGORY, account))
            .await
            .unwrap_or_else(|e| panic!("load {account}: {e}"));
        assert_eq!(s.balance, balance, "balance of {account}");
    }
    let left = runner
        .models()
        .due(
            &eventfold_consumers::saga::runner::checkpoint_name::<Transfer>(),
            Utc::now() + chrono::TimeDelta::days(365),
            10,
        )
        .await
        .unwrap_or_else(|e| panic!("due: {e}"));
    assert!(
        left.iter()
            .all(|d| !d.stream_id.starts_with(&format!("{tenant}/"))),
        "{left:?}"
    );
    report
}
