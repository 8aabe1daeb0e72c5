//! The read-models table: [`ReadModelStore`] on DynamoDB.
//!
//! Table keys `pk` (S) + `sk` (S), global secondary index `gsi1` on `gsi1pk` (S) + `gsi1sk` (S)
//! projecting every attribute. Items:
//!
//! - a document: `pk = {tenant}#{view}`, `sk = key`, `checkpoint` (N), `data` (the JSON as a
//!   native map; absent when the document is `Null`), and when indexed (and not `Null`)
//!   `gsi1pk = {tenant}#{view}#{partition}`, `gsi1sk = sort`;
//! - a counter document: same keys, `kind = "counter"`, one top-level number `c_{name}` per
//!   counter (DynamoDB's `ADD` works on top-level attributes only), read back as
//!   `data: {name: n, ...}`;
//! - a counter view's checkpoint per source stream: `pk = _cp#{view}`, `sk = stream_id`,
//!   `checkpoint` (N);
//! - a view's version pointer ([`ViewPointer`]): `pk = _view`, `sk = view`, `rev` (N, the
//!   condition of the next write) and `pointer` (S, the pointer as JSON). A version `n > 1`
//!   of a view stores its documents under the view name `{view}@v{n}`, so its items are
//!   those above with that name (see `eventfold_consumers::projection::versions`).
//!
//! A `get_many` is one `BatchGetItem` (consistent reads) per 100 distinct keys, asking again
//! for the keys it leaves unprocessed, with backoff, a bounded number of times without
//! progress. A `put` is one conditional `PutItem`; an `add` is one `TransactWriteItems` (the conditional
//! checkpoint move plus an `ADD` per counter document), or one conditional `UpdateItem` when
//! it adds nothing (a plain checkpoint move, as the saga runner makes per source stream). The
//! sagas' deadline index lives in the same table (its [`DeadlineIndex`](eventfold_consumers::saga::DeadlineIndex) implementation). Cursors are the URL-safe base64 of the
//! query's `LastEvaluatedKey` as JSON, checked against the query they continue.

mod codec;
mod deadlines;
pub use deadlines::{EXPIRES_AT_EPOCH, IDLE_ENTRY_RETENTION_DAYS};
mod versions;

use crate::dynamodb::{from_attr, n, s, to_attr};
use crate::faults::from_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TransactWriteItem, Update};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use codec::*;
use eventfold_consumers::projection::{
    Doc, Found, ListQuery, ModelKey, Page, ReadModelError, ReadModelStore, ViewPointer,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

/// Name of the list index.
pub const INDEX: &str = "gsi1";
/// Prefix of counter attributes on counter documents.
pub const COUNTER_PREFIX: &str = "c_";
/// Largest number of counter documents one `add` may touch (one transaction holds 100 items,
/// one of them the checkpoint).
pub const MAX_COUNTER_DOCS: usize = 99;
/// Most items one `TransactWriteItems` may hold.
pub const TRANSACTION_ITEMS: usize = 100;
/// Queries one `list` call may run to fill a page around hidden (`Null`) documents.
const MAX_QUERIES_PER_PAGE: usize = 8;
/// Most keys one `BatchGetItem` may ask for.
pub const BATCH_GET_KEYS: usize = 100;
/// `BatchGetItem` rounds in a row that may return nothing but unprocessed keys (throttling)
/// before `get_many` reports the store unavailable.
const BATCH_GET_IDLE_ROUNDS: u32 = 5;
/// Backoff before the first retry of unprocessed keys; doubled each idle round.
const BATCH_GET_BACKOFF: Duration = Duration::from_millis(25);

type Item = HashMap<String, AttributeValue>;

/// Read models in one DynamoDB table (see the module docs for the item layout).
#[derive(Debug, Clone)]
pub struct DynamoReadModelStore {
    client: Client,
    table: String,
}

table_store!(DynamoReadModelStore);

impl DynamoReadModelStore {
    /// The items at `wanted` (pk, sk), by key, read consistently in `BatchGetItem`s of at
    /// most 100 distinct keys, asking again for unprocessed ones.
    async fn batch_items(
        &self,
        wanted: &[(String, String)],
    ) -> Result<HashMap<(String, String), Item>, ReadModelError> {
        // BatchGetItem refuses a request naming one key twice.
        let mut distinct = wanted.to_vec();
        distinct.sort();
        distinct.dedup();
        let table = self.table.as_str();
        let round = |keys: Vec<Item>| async move {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| corrupt(e.to_string()))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(from_sdk)?;
            let got = out
                .responses
                .and_then(|mut r| r.remove(table))
                .unwrap_or_default();
            let unprocessed = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default();
            Ok((got, unprocessed))
        };
        let items = read_batched(
            distinct.iter().map(key_item).collect(),
            round,
            tokio::time::sleep,
        )
        .await?;
        let mut by_key: HashMap<(String, String), Item> = HashMap::with_capacity(items.len());
        for item in items {
            let key = (
                get_s(&item, "pk")?.to_owned(),
                get_s(&item, "sk")?.to_owned(),
            );
            by_key.insert(key, item);
        }
        Ok(by_key)
    }

    /// The conditional move of a counter view's checkpoint from `expected` to `new`.
    fn checkpoint_update(
        &self,
        view: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
    ) -> Result<Update, ReadModelError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(checkpoint_pk(view)))
            .key("sk", s(stream_id))
            .update_expression("SET #cp = :new")
            .expression_attribute_names("#cp", "checkpoint")
            .expression_attribute_values(":new", n(new));
        update = if expected == 0 {
            update.condition_expression("attribute_not_exists(pk)")
        } else {
            update
                .condition_expression("#cp = :expected")
                .expression_attribute_values(":expected", n(expected))
        };
        update.build().map_err(|e| corrupt(e.to_string()))
    }

    /// `ADD`s `counters` to the counter document `key`.
    fn counter_update(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
        counters: &BTreeMap<String, i64>,
    ) -> Result<Update, ReadModelError> {
        let mut expression = "SET #kind = :counter".to_owned();
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(doc_pk(tenant, view)))
            .key("sk", s(key))
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":counter", s("counter"));
        for (i, (name, delta)) in counters.iter().enumerate() {
            expression.push_str(if i == 0 { " ADD " } else { ", " });
            expression.push_str(&format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), format!("{COUNTER_PREFIX}{name}"))
                .expression_attribute_values(format!(":c{i}"), n(delta));
        }
        update
            .update_expression(expression)
            .build()
            .map_err(|e| corrupt(e.to_string()))
    }
}

#[async_trait]
impl ReadModelStore for DynamoReadModelStore {
    async fn get(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<Doc>, ReadModelError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(doc_pk(tenant, view)))
            .key("sk", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        out.item.as_ref().map(decode_doc).transpose()
    }

    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: Doc,
        expected: u64,
    ) -> Result<(), ReadModelError> {
        let item = encode_doc(tenant, view, &doc)?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#cp", "checkpoint")
            .expression_attribute_values(":expected", n(expected));
        // A document that exists has a checkpoint: 0 only for counter documents.
        request = if expected == 0 {
            request.condition_expression("attribute_not_exists(pk) OR #cp = :expected")
        } else {
            request.condition_expression("#cp = :expected")
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(ReadModelError::Conflict {
                        view: view.to_owned(),
                        key: doc.key,
                    })
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(checkpoint_pk(view)))
            .key("sk", s(stream_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        out.item
            .map_or(Ok(0), |item| get_count(&item, "checkpoint"))
    }

    async fn get_many(&self, keys: &[ModelKey]) -> Result<Vec<Found>, ReadModelError> {
        let wanted: Vec<(String, String)> = keys.iter().map(model_key).collect();
        let by_key = self.batch_items(&wanted).await?;
        keys.iter()
            .zip(&wanted)
            .map(|(key, at)| match key {
                ModelKey::Doc { .. } => by_key.get(at).map(decode_doc).transpose().map(Found::Doc),
                ModelKey::Checkpoint { .. } => by_key
                    .get(at)
                    .map_or(Ok(0), |item| get_count(item, "checkpoint"))
                    .map(Found::Checkpoint),
                ModelKey::Pointer { .. } => by_key
                    .get(at)
                    .map_or(Ok(ViewPointer::initial()), versions::decode_pointer)
                    .map(Found::Pointer),
            })
            .collect()
    }

    async fn add(
        &self,
        tenant: &str,
        view: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        deltas: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        let conflict = || ReadModelError::Conflict {
            view: view.to_owned(),
            key: stream_id.to_owned(),
        };
        // One transaction may touch an item once: sum the deltas per document first.
        let mut docs: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (key, counters) in deltas {
            let entry = docs.entry(key).or_default();
            for (name, delta) in counters {
                *entry.entry(name).or_default() += delta;
            }
        }
        if docs.len() > MAX_COUNTER_DOCS {
            return Err(ReadModelError::Unavailable(format!(
                "one event touches {} documents of {view}; at most {MAX_COUNTER_DOCS} fit one transaction",
                docs.len()
            ).into()));
        }
        let checkpoint = self.checkpoint_update(view, stream_id, expected, new)?;
        if docs.is_empty() {
            // Nothing to add: the checkpoint alone, as a single conditional write.
            let result = self
                .client
                .update_item()
                .table_name(checkpoint.table_name())
                .set_key(Some(checkpoint.key().clone()))
                .update_expression(checkpoint.update_expression())
                .set_condition_expression(checkpoint.condition_expression().map(str::to_owned))
                .set_expression_attribute_names(checkpoint.expression_attribute_names().cloned())
                .set_expression_attribute_values(checkpoint.expression_attribute_values().cloned())
                .send()
                .await;
            return match result {
                Ok(_) => Ok(()),
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => Err(conflict()),
                    _ => Err(from_sdk(e)),
                },
            };
        }
        let mut items = vec![TransactWriteItem::builder().update(checkpoint).build()];
        for (key, counters) in &docs {
            let update = self.counter_update(tenant, view, key, counters)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c))
                    if c.cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed"))
                        || c.message()
                            .is_some_and(|m| m.contains("ConditionalCheckFailed")) =>
                {
                    Err(conflict())
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: ListQuery,
    ) -> Result<Page, ReadModelError> {
        let pk = doc_pk(tenant, view);
        let limit = query.limit.clamp(1, 1000);
        let mut start = match (&query.index, &query.cursor) {
            (_, None) => None,
            (None, Some(c)) => Some(decode_cursor(c, &["pk", "sk"], ("pk", &pk))?),
            (Some(partition), Some(c)) => Some(decode_cursor(
                c,
                &["gsi1pk", "gsi1sk", "pk", "sk"],
                ("gsi1pk", &format!("{pk}#{partition}")),
            )?),
        };
        let mut docs = Vec::new();
        for _ in 0..MAX_QUERIES_PER_PAGE {
            let want = i32::try_from(limit - docs.len()).unwrap_or(1000);
            let request = self.client.query().table_name(&self.table).limit(want);
            let request = match &query.index {
                // By key: hidden (Null) documents are filtered out, so a query may return fewer
                // items than it read; the loop tops the page up.
                None => request
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(&pk))
                    .filter_expression("attribute_exists(#data) OR attribute_exists(#kind)")
                    .expression_attribute_names("#data", "data")
                    .expression_attribute_names("#kind", "kind")
                    .consistent_read(true),
                // The index is sparse (no Null documents): newest sort key first.
                Some(partition) => request
                    .index_name(INDEX)
                    .key_condition_expression("gsi1pk = :p")
                    .expression_attribute_values(":p", s(format!("{pk}#{partition}")))
                    .scan_index_forward(false),
            };
            let out = request
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(from_sdk)?;
            for item in out.items() {
                docs.push(decode_doc(item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() || docs.len() >= limit {
                break;
            }
        }
        let next = start.as_ref().map(encode_cursor).transpose()?;
        Ok(Page { docs, next })
    }

    async fn pointer(&self, view: &str) -> Result<ViewPointer, ReadModelError> {
        self.read_pointer(view).await
    }

    async fn pointers(&self, views: &[String]) -> Result<Vec<ViewPointer>, ReadModelError> {
        // One `BatchGetItem` of the pointer keys, as `get_many` reads them.
        let keys: Vec<ModelKey> = views
            .iter()
            .map(|view| ModelKey::Pointer { view: view.clone() })
            .collect();
        self.get_many(&keys)
            .await?
            .into_iter()
            .map(|found| match found {
                Found::Pointer(p) => Ok(p),
                other => Err(corrupt(format!("a pointer read answered {other:?}"))),
            })
            .collect()
    }

    async fn set_pointer(&self, view: &str, pointer: &ViewPointer) -> Result<(), ReadModelError> {
        self.write_pointer(view, pointer).await
    }

    async fn drop_view(&self, tenants: &[String], view: &str) -> Result<usize, ReadModelError> {
        self.delete_view(tenants, view).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_round_trip_through_items() {
        let doc = Doc {
            key: "o-1".into(),
            data: json!({"total": 12, "items": [{"sku": "a"}], "note": null}),
            checkpoint: 4,
            index: Some(("c-1".into(), "2026-01-01#o-1".into())),
        };
        let item = encode_doc("t", "orders", &doc).expect("encodes");
        assert_eq!(item.get("pk"), Some(&s("t#orders")));
        assert_eq!(item.get("gsi1pk"), Some(&s("t#orders#c-1")));
        assert_eq!(decode_doc(&item).expect("decodes"), doc);

        let hidden = Doc {
            data: Value::Null,
            ..doc
        };
        let item = encode_doc("t", "orders", &hidden).expect("encodes");
        assert!(!item.contains_key("data") && !item.contains_key("gsi1pk"));
        let back = decode_doc(&item).expect("decodes");
        assert_eq!(
            (back.data, back.checkpoint, back.index),
            (Value::Null, 4, None)
        );
    }

    #[test]
    fn counter_items_read_as_maps() {
        let item = HashMap::from([
            ("pk".to_owned(), s("t#sales")),
            ("sk".to_owned(), s("2026-01-01")),
            ("kind".to_owned(), s("counter")),
            ("c_orders".to_owned(), n(3)),
            ("c_cents".to_owned(), n(-40)),
        ]);
        let doc = decode_doc(&item).expect("decodes");
        assert_eq!(doc.data, json!({"orders": 3, "cents": -40}));
        assert_eq!(doc.checkpoint, 0);
    }

    fn keys(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| key_item(&("t#v".to_owned(), format!("k{i:03}"))))
            .collect()
    }

    /// A store that answers each round with at most `per_round` of the keys asked (none
    /// while `stalls` lasts), the rest unprocessed, as a throttled BatchGetItem does.
    struct Throttled {
        per_round: usize,
        stalls: u32,
        asked: Vec<usize>,
    }

    impl Throttled {
        fn round(&mut self, keys: Vec<Item>) -> (Vec<Item>, Vec<Item>) {
            self.asked.push(keys.len());
            if self.stalls > 0 {
                self.stalls -= 1;
                return (Vec::new(), keys);
            }
            let mut keys = keys;
            let rest = keys.split_off(self.per_round.min(keys.len()));
            (keys, rest)
        }
    }

    async fn read_through(
        store: &std::sync::Mutex<Throttled>,
        n: usize,
        slept: &std::sync::Mutex<Vec<Duration>>,
    ) -> Result<Vec<Item>, ReadModelError> {
        read_batched(
            keys(n),
            |k| async move { Ok(store.lock().expect("lock").round(k)) },
            |d| async move { slept.lock().expect("lock").push(d) },
        )
        .await
    }

    #[tokio::test]
    async fn batched_reads_chunk_by_100_and_ask_again_for_unprocessed_keys() {
        let store = std::sync::Mutex::new(Throttled {
            per_round: 40,
            stalls: 2,
            asked: Vec::new(),
        });
        let slept = std::sync::Mutex::new(Vec::new());
        let items = read_through(&store, 130, &slept).await.expect("read");
        let mut got: Vec<String> = items
            .iter()
            .map(|i| get_s(i, "sk").expect("sk").to_owned())
            .collect();
        got.sort();
        let all: Vec<String> = (0..130).map(|i| format!("k{i:03}")).collect();
        assert_eq!(got, all, "every key read exactly once");
        let store = store.into_inner().expect("lock");
        // Two idle rounds, then 40 a round: 100 -> 100 -> 100 -> 60 -> 20, then the last 30.
        assert_eq!(store.asked, [100, 100, 100, 60, 20, 30]);
        let slept = slept.into_inner().expect("lock");
        assert_eq!(
            slept,
            [25, 50, 25, 25].map(Duration::from_millis),
            "backoff doubles while idle and starts over after progress"
        );
    }

    #[tokio::test]
    async fn batched_reads_give_up_after_bounded_idle_rounds() {
        let store = std::sync::Mutex::new(Throttled {
            per_round: 10,
            stalls: u32::MAX,
            asked: Vec::new(),
        });
        let slept = std::sync::Mutex::new(Vec::new());
        let r = read_through(&store, 5, &slept).await;
        assert!(
            matches!(&r, Err(ReadModelError::Unavailable(m)) if m.to_string().contains("5 keys")),
            "{r:?}"
        );
        let asked = store.into_inner().expect("lock").asked;
        assert_eq!(asked.len(), BATCH_GET_IDLE_ROUNDS as usize);
    }

    #[test]
    fn cursors_only_continue_their_own_query() {
        let key = HashMap::from([("pk".to_owned(), s("t#v")), ("sk".to_owned(), s("k9"))]);
        let cursor = encode_cursor(&key).expect("encodes");
        assert_eq!(
            decode_cursor(&cursor, &["pk", "sk"], ("pk", "t#v")).expect("valid"),
            key
        );
        for (names, partition) in [
            (&["pk", "sk"][..], ("pk", "u#v")),
            (&["gsi1pk", "gsi1sk", "pk", "sk"][..], ("gsi1pk", "t#v#p")),
        ] {
            assert!(matches!(
                decode_cursor(&cursor, names, partition),
                Err(ReadModelError::InvalidCursor)
            ));
        }
        assert!(matches!(
            decode_cursor("!!", &["pk", "sk"], ("pk", "t#v")),
            Err(ReadModelError::InvalidCursor)
        ));
    }
}
