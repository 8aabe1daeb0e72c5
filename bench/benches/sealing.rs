//! What crypto-shredding costs in process: commands and loads of `Customer` streams (three
//! personal fields per registration, one per change) through the executor the command API
//! runs (warm state caches), on the memory store as it is (`plain`: personal values stored
//! in the clear, the baseline) and behind the `SealingStore` with a cached key ring
//! (`sealed`: AES-256-GCM per value, one key fetch per subject, then none). Printed, never
//! asserted; the key-ring requests show the warm path asks for no key.
//!
//! `cargo bench -p bench --no-default-features --bench sealing` (`EVENTFOLD_SEAL_CUSTOMERS`
//! 1000, `EVENTFOLD_SEAL_CHANGES` 20 per customer).

use eventfold::{
    CachedKeyRing, CommandContext, CommandExecutor, EventStore, ExecutorConfig, MemoryEventStore,
    MemoryKeyRing, SealingStore, StreamId,
};
use shop::customer::CustomerCommand;
use shop::registry::ShopCaches;
use shop::{Customer, CustomerId};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    commands: u64,
    command_time: Duration,
    loads: u64,
    load_time: Duration,
}

async fn run<S: EventStore + 'static>(store: Arc<S>, customers: u64, changes: u64) -> Figures {
    let config = ExecutorConfig {
        snapshot_every: 100,
        ..ExecutorConfig::default()
    };
    let executor = CommandExecutor::new(store.clone(), config).caching::<ShopCaches>();
    let streams: Vec<StreamId> = (0..customers)
        .map(|i| StreamId::new("bench", "Customer", &format!("c-{i}")).expect("id"))
        .collect();
    let context = CommandContext::root("bench", "bench", "cmd");
    let started = Instant::now();
    for (i, stream) in streams.iter().enumerate() {
        let register = CustomerCommand::RegisterCustomer {
            customer_id: CustomerId::of_stream(stream),
            name: format!("Customer Number {i}"),
            email: format!("customer{i}@example.com"),
            shipping_address: format!("{i} Long Street, Some Town"),
        };
        executor
            .execute::<Customer>(stream, None, &register, &context)
            .await
            .expect("registered");
    }
    for round in 0..changes {
        for (i, stream) in streams.iter().enumerate() {
            let change = CustomerCommand::ChangeCustomerDetails {
                name: None,
                email: Some(format!("customer{i}+{round}@example.com")),
                shipping_address: None,
            };
            executor
                .execute::<Customer>(stream, None, &change, &context)
                .await
                .expect("changed");
        }
    }
    let command_time = started.elapsed();
    // Cold loads (a fresh instance): every stream read and folded, sealed values opened.
    let cold = CommandExecutor::new(store, ExecutorConfig::default());
    let started = Instant::now();
    for stream in &streams {
        let (version, _) = cold.load::<Customer>(stream).await.expect("loads");
        assert_eq!(version, changes + 1);
    }
    Figures {
        commands: customers * (changes + 1),
        command_time,
        loads: customers,
        load_time: started.elapsed(),
    }
}

/// The faster of two runs, per measure.
fn best(old: Option<Figures>, new: Figures) -> Figures {
    match old {
        None => new,
        Some(old) => Figures {
            commands: new.commands,
            command_time: old.command_time.min(new.command_time),
            loads: new.loads,
            load_time: old.load_time.min(new.load_time),
        },
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let customers = setting("EVENTFOLD_SEAL_CUSTOMERS", 1000);
    let changes = setting("EVENTFOLD_SEAL_CHANGES", 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // A warm-up, then each variant three times, alternating; the best run of each counts
    // (the machine is shared: the best is the least disturbed).
    runtime.block_on(run(Arc::new(MemoryEventStore::new()), customers / 10, 2));
    let mut plain: Option<Figures> = None;
    let mut sealed: Option<Figures> = None;
    let mut asked = 0;
    for _ in 0..3 {
        let p = runtime.block_on(run(Arc::new(MemoryEventStore::new()), customers, changes));
        let keys = Arc::new(CachedKeyRing::new(MemoryKeyRing::new()));
        let store = Arc::new(SealingStore::new(MemoryEventStore::new(), keys.clone()));
        let s = runtime.block_on(run(store, customers, changes));
        asked = keys.inner().requests();
        plain = Some(best(plain, p));
        sealed = Some(best(sealed, s));
    }
    let (Some(plain), Some(sealed)) = (plain, sealed) else {
        return;
    };
    println!(
        "sealing bench: {customers} customers x ({changes} changes + 1 registration), warm command path, snapshots every 100"
    );
    for (name, f) in [("plain", &plain), ("sealed", &sealed)] {
        println!(
            "  {name:>6}: {:>9.0} commands/s ({:>6.1} us each), {:>8.0} cold loads/s ({:>6.1} us each)",
            rate(f.commands, f.command_time),
            f.command_time.as_secs_f64() * 1e6 / f.commands as f64,
            rate(f.loads, f.load_time),
            f.load_time.as_secs_f64() * 1e6 / f.loads as f64,
        );
    }
    let change = |p: f64, s: f64| (s / p - 1.0) * 100.0;
    println!(
        "  change: commands {:+.1}%, cold loads {:+.1}%; key-ring requests: {asked} for {customers} subjects ({} per warm command)",
        change(
            rate(plain.commands, plain.command_time),
            rate(sealed.commands, sealed.command_time)
        ),
        change(
            rate(plain.loads, plain.load_time),
            rate(sealed.loads, sealed.load_time)
        ),
        if asked == customers { "0" } else { "some" },
    );
}
