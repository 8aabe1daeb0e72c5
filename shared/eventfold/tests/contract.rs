//! The in-memory adapter must pass the same store contract as every other adapter.

use eventfold::MemoryEventStore;

#[tokio::test]
async fn memory_store_passes_the_contract_suite() {
    let store = MemoryEventStore::new();
    eventfold::contract::run_all(&store, "mem").await;
    // A second suite with another prefix on the same store must not trip over the first:
    // prefixes are how adapters share one table.
    eventfold::contract::run_all(&store, "mem2").await;
    // The memory store also refuses versions no load or append reported (DynamoDB cannot at
    // one request; there the `ExpectedVersion` type is the guard).
    eventfold::contract::unobserved_versions_are_refused(&store, "mem").await;
}
