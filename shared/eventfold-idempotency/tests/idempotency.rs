//! The in-memory idempotency store must pass the same contract as every other adapter.

use eventfold_idempotency::MemoryIdempotencyStore;
use eventfold_testkit::idempotency::{self as contract, Attempt, Task};
use std::sync::Arc;

fn tokio_spawn(task: Task) -> Task {
    let handle = tokio::spawn(task);
    Box::pin(async move {
        handle
            .await
            .unwrap_or_else(|e| Attempt::Other(format!("task failed: {e}")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_idempotency_contract() {
    let store = Arc::new(MemoryIdempotencyStore::new());
    contract::run_all(store.clone(), "mem", tokio_spawn).await;
    // A second suite under another tenant on the same store must not trip over the first.
    contract::run_all(store, "mem2", contract::inline).await;
}
