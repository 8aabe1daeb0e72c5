//! The contract every [`ReadModelStore`] adapter must pass: run it from each adapter's tests.
//!
//! Every check works in its own view under tenants derived from `tenant_prefix`, so suites can
//! share one table; failures panic with the broken rule.

mod counters;
mod documents;
mod listing;
mod versions;

pub use counters::{
    an_empty_add_is_a_plain_conditional_checkpoint_move,
    counters_add_and_move_the_checkpoint_atomically,
};
pub use documents::{
    get_many_reads_what_single_reads_do, null_data_keeps_the_checkpoint_but_hides_the_doc,
    put_and_get_follow_the_expected_checkpoint,
};
pub use listing::{
    invalid_cursors_are_refused, list_by_index_pages_newest_first,
    list_by_key_pages_through_every_doc_once_in_order, tenants_are_isolated,
};
pub use versions::{dropping_a_version_leaves_the_others, pointers_move_by_conditional_writes};

use eventfold_consumers::projection::{Doc, ListQuery, Page, ReadModelError, ReadModelStore};
use serde_json::Value;
use std::collections::BTreeMap;

/// Runs every check against `store`. `tenant_prefix` must be unique to this run and a valid
/// tenant (`[A-Za-z0-9_-]`, at most 56 characters).
pub async fn run_all(store: &dyn ReadModelStore, tenant_prefix: &str) {
    put_and_get_follow_the_expected_checkpoint(store, tenant_prefix).await;
    null_data_keeps_the_checkpoint_but_hides_the_doc(store, tenant_prefix).await;
    counters_add_and_move_the_checkpoint_atomically(store, tenant_prefix).await;
    an_empty_add_is_a_plain_conditional_checkpoint_move(store, tenant_prefix).await;
    list_by_key_pages_through_every_doc_once_in_order(store, tenant_prefix).await;
    list_by_index_pages_newest_first(store, tenant_prefix).await;
    tenants_are_isolated(store, tenant_prefix).await;
    invalid_cursors_are_refused(store, tenant_prefix).await;
    get_many_reads_what_single_reads_do(store, tenant_prefix).await;
    pointers_move_by_conditional_writes(store, tenant_prefix).await;
    dropping_a_version_leaves_the_others(store, tenant_prefix).await;
}

fn doc(key: &str, data: Value, checkpoint: u64, index: Option<(&str, &str)>) -> Doc {
    Doc {
        key: key.to_owned(),
        data,
        checkpoint,
        index: index.map(|(p, s)| (p.to_owned(), s.to_owned())),
    }
}

fn rich(n: u64) -> Value {
    crate::event_store::rich_data(n)
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, ReadModelError>) -> bool {
    matches!(r, Err(ReadModelError::Conflict { .. }))
}

async fn put(store: &dyn ReadModelStore, tenant: &str, view: &str, d: Doc, expected: u64) {
    let key = d.key.clone();
    store
        .put(tenant, view, d, expected)
        .await
        .unwrap_or_else(|e| panic!("put {view}/{key} at expected {expected}: {e}"));
}

fn deltas(entries: &[(&str, &[(&str, i64)])]) -> Vec<(String, BTreeMap<String, i64>)> {
    entries
        .iter()
        .map(|(key, counters)| {
            (
                (*key).to_owned(),
                counters
                    .iter()
                    .map(|(c, d)| ((*c).to_owned(), *d))
                    .collect(),
            )
        })
        .collect()
}

/// Follows cursors from the first page to the last: the pages, in order.
async fn all_pages(
    store: &dyn ReadModelStore,
    tenant: &str,
    view: &str,
    index: Option<&str>,
    limit: usize,
) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(
                tenant,
                view,
                ListQuery {
                    index: index.map(str::to_owned),
                    cursor: cursor.take(),
                    limit,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("list {view} (index {index:?}, limit {limit}): {e}"));
        assert!(
            page.docs.len() <= limit,
            "a page of {view} holds {} docs, more than its limit {limit}",
            page.docs.len()
        );
        cursor = page.next.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(
            pages.len() <= 1000,
            "listing {view} does not terminate (limit {limit})"
        );
    }
}

/// Every doc of a listing, across its pages, in order.
async fn list_all(
    store: &dyn ReadModelStore,
    tenant: &str,
    view: &str,
    index: Option<&str>,
    limit: usize,
) -> Vec<Doc> {
    all_pages(store, tenant, view, index, limit)
        .await
        .into_iter()
        .flat_map(|p| p.docs)
        .collect()
}
