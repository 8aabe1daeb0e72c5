//! Property: whatever commands run, the live state equals a full replay of the stored events
//! and equals what a fresh executor loads from snapshot + tail.

mod common;

use common::{Counter, CounterCommand, CounterEvent, CounterState, Probe, ctx, replay, stream};
use eventfold::{
    Aggregate, CommandError, CommandExecutor, DomainEvent, EventStore, ExecutorConfig, LoadOptions,
    StateCache,
};
use proptest::prelude::*;

const SNAPSHOT_EVERY: u64 = 3;

fn command() -> impl Strategy<Value = CounterCommand> {
    prop_oneof![
        4 => (-20i64..=20).prop_map(|n| CounterCommand::Add { n }),
        // Large amounts now and then so the `within-limit` rule fires too.
        1 => prop_oneof![Just(common::LIMIT), Just(-common::LIMIT)]
            .prop_map(|n| CounterCommand::Add { n }),
        2 => prop::collection::vec(-20i64..=20, 0..5).prop_map(|ns| CounterCommand::AddMany { ns }),
        1 => Just(CounterCommand::Reset),
        2 => (0u8..4).prop_map(|id| CounterCommand::SetOnce { id: format!("m{id}") }),
    ]
}

fn config(cache_capacity: usize) -> ExecutorConfig {
    ExecutorConfig {
        snapshot_every: SNAPSHOT_EVERY,
        max_attempts: 3,
        retry_budget: None,
        cache_capacity,
        backoff: None,
    }
}

/// Runs `commands` one by one, checking each outcome against the pure aggregate, then checks
/// the stored stream against the live state.
async fn check(commands: Vec<CounterCommand>, cache_capacity: usize) -> Result<(), TestCaseError> {
    let store = Probe::new();
    let exec = CommandExecutor::new(store.clone(), config(cache_capacity))
        .caching::<StateCache<CounterState>>();
    let s = stream("prop");
    let mut live = Counter::initial();
    let mut version = 0;
    for (i, command) in commands.iter().enumerate() {
        // The model: what the pure aggregate decides on the state we believe in.
        let expected = Counter::decide(&live, command);
        let result = exec
            .execute::<Counter>(&s, None, command, &ctx(&format!("c{i}")))
            .await;
        match (result, expected) {
            (Ok(out), Ok(events)) => {
                let written: Vec<CounterEvent> = out
                    .events
                    .iter()
                    .map(|e| CounterEvent::decode(&e.event_type, &e.data).expect("decodes"))
                    .collect();
                prop_assert_eq!(&written, &events);
                prop_assert_eq!(out.version, version + events.len() as u64);
                live = Counter::fold(live, events.iter());
                prop_assert_eq!(&*out.state, &live);
                version = out.version;
            }
            (Err(CommandError::Rejected(got)), Err(model)) => prop_assert_eq!(got, model),
            (result, expected) => {
                return Err(TestCaseError::fail(format!(
                    "{command:?}: executor gave {result:?}, model {expected:?}"
                )));
            }
        }
    }

    // Replay == live.
    let stored = store.events(&s).await;
    prop_assert_eq!(stored.len() as u64, version);
    prop_assert_eq!(replay(&stored), live.clone());

    // A fresh executor starts from the newest snapshot and folds only the tail.
    let loaded = store
        .load(
            &s.to_string(),
            LoadOptions {
                state_schema: Some(Counter::STATE_SCHEMA),
                snapshot_every: SNAPSHOT_EVERY,
            },
        )
        .await
        .expect("load works");
    prop_assert_eq!(loaded.snapshot.is_some(), version >= SNAPSHOT_EVERY);
    if let Some(snap) = &loaded.snapshot {
        prop_assert_eq!(loaded.events.len() as u64, version - snap.version);
        let at_snapshot: CounterState = serde_json::from_value(snap.state.clone()).expect("state");
        prop_assert_eq!(at_snapshot, replay(&stored[..snap.version as usize]));
    }
    let fresh =
        CommandExecutor::new(store.clone(), config(16)).caching::<StateCache<CounterState>>();
    let (fresh_version, fresh_state) = fresh.load::<Counter>(&s).await.expect("load works");
    prop_assert_eq!(fresh_version, version);
    prop_assert_eq!(fresh_state, live);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_live_equals_fresh_load(
        commands in prop::collection::vec(command(), 0..40),
        cached in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime builds");
        runtime.block_on(check(commands, if cached { 16 } else { 0 }))?;
    }
}
