//! The memory adapters of this crate pass the contract suites of their ports
//! (`eventfold-testkit`), as every AWS adapter must.

use eventfold_consumers::deadletter::MemoryDeadLetterStore;
use eventfold_consumers::projection::{
    Doc, ListQuery, MemoryReadModelStore, Page, ReadModelError, ReadModelStore, ViewPointer,
};
use eventfold_testkit::read_models::run_all;
use std::collections::BTreeMap;

#[tokio::test]
async fn the_memory_dead_letter_store_passes_the_contract() {
    eventfold_testkit::dead_letters::run_all(&MemoryDeadLetterStore::new(), "mem").await;
}

#[tokio::test]
async fn memory_store_passes_the_read_model_contract() {
    let store = MemoryReadModelStore::new();
    run_all(&store, "contract").await;
}

/// Delegates the single reads and writes only: `get_many` is the trait's default.
struct SingleReads(MemoryReadModelStore);

#[async_trait::async_trait]
impl ReadModelStore for SingleReads {
    async fn get(&self, t: &str, v: &str, k: &str) -> Result<Option<Doc>, ReadModelError> {
        self.0.get(t, v, k).await
    }
    async fn put(&self, t: &str, v: &str, d: Doc, e: u64) -> Result<(), ReadModelError> {
        self.0.put(t, v, d, e).await
    }
    async fn checkpoint(&self, v: &str, s: &str) -> Result<u64, ReadModelError> {
        self.0.checkpoint(v, s).await
    }
    async fn add(
        &self,
        t: &str,
        v: &str,
        s: &str,
        e: u64,
        n: u64,
        d: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        self.0.add(t, v, s, e, n, d).await
    }
    async fn list(&self, t: &str, v: &str, q: ListQuery) -> Result<Page, ReadModelError> {
        self.0.list(t, v, q).await
    }
    // `pointers` is the trait's default too.
    async fn pointer(&self, v: &str) -> Result<ViewPointer, ReadModelError> {
        self.0.pointer(v).await
    }
    async fn set_pointer(&self, v: &str, p: &ViewPointer) -> Result<(), ReadModelError> {
        self.0.set_pointer(v, p).await
    }
    async fn drop_view(&self, t: &[String], v: &str) -> Result<usize, ReadModelError> {
        self.0.drop_view(t, v).await
    }
}

#[tokio::test]
async fn the_default_get_many_passes_the_contract() {
    run_all(&SingleReads(MemoryReadModelStore::new()), "default").await;
}
