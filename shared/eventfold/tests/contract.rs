//! The in-memory adapter must pass the same store contract as every other adapter.

use eventfold::MemoryEventStore;

#[tokio::test]
async fn memory_store_passes_the_contract_suite() {
    let store = MemoryEventStore::new();
    eventfold_testkit::event_store::run_all(&store, "mem").await;
    // A second suite with another prefix on the same store must not trip over the first:
    // prefixes are how adapters share one table.
    eventfold_testkit::event_store::run_all(&store, "mem2").await;
}
