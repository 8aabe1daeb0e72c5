//! View pointers and retired versions in the read-models table: one item per view
//! (`pk = _view`, `sk = view`, `rev` N, `pointer` S as JSON), written conditionally on `rev`;
//! a retired version's items deleted in `BatchWriteItem`s of 25.

use super::codec::{checkpoint_pk, corrupt, doc_pk, get_count, get_s};
use super::{DynamoReadModelStore, Item};
use crate::dynamodb::{n, s};
use crate::faults::from_sdk;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
use eventfold_consumers::projection::{ReadModelError, ViewPointer};
use std::time::Duration;

/// Partition of the pointer items.
pub const POINTER_PK: &str = "_view";
/// Items one `BatchWriteItem` may delete.
const BATCH_WRITE_ITEMS: usize = 25;
/// `BatchWriteItem` rounds in a row that may leave everything unprocessed before giving up.
const BATCH_WRITE_IDLE_ROUNDS: u32 = 5;

pub(super) fn decode_pointer(item: &Item) -> Result<ViewPointer, ReadModelError> {
    let rev = get_count(item, "rev")?;
    let json = get_s(item, "pointer")?;
    let mut pointer: ViewPointer =
        serde_json::from_str(json).map_err(|e| corrupt(format!("unreadable view pointer: {e}")))?;
    // The key attribute is the one the conditions test: it wins over the copy in the JSON.
    pointer.rev = rev;
    Ok(pointer)
}

impl DynamoReadModelStore {
    /// The pointer of `view` (one consistent `GetItem`).
    pub(super) async fn read_pointer(&self, view: &str) -> Result<ViewPointer, ReadModelError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(POINTER_PK))
            .key("sk", s(view))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        out.item
            .as_ref()
            .map_or(Ok(ViewPointer::initial()), decode_pointer)
    }

    /// Stores `pointer` if the stored revision is `pointer.rev - 1` (one conditional
    /// `PutItem`).
    pub(super) async fn write_pointer(
        &self,
        view: &str,
        pointer: &ViewPointer,
    ) -> Result<(), ReadModelError> {
        let json = serde_json::to_string(pointer).map_err(|e| corrupt(e.to_string()))?;
        let expected = pointer.rev.saturating_sub(1);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(POINTER_PK))
            .item("sk", s(view))
            .item("rev", n(pointer.rev))
            .item("pointer", s(json));
        request = if expected == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("#rev = :expected")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":expected", n(expected))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(ReadModelError::Conflict {
                        view: view.to_owned(),
                        key: "pointer".to_owned(),
                    })
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    /// Deletes every item of the stored view `view` for `tenants` and its counter
    /// checkpoints; returns how many.
    pub(super) async fn delete_view(
        &self,
        tenants: &[String],
        view: &str,
    ) -> Result<usize, ReadModelError> {
        let mut deleted = 0;
        let partitions = tenants
            .iter()
            .map(|t| doc_pk(t, view))
            .chain([checkpoint_pk(view)]);
        for pk in partitions {
            let mut start = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(&pk))
                    .projection_expression("pk, sk")
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                let keys: Vec<Item> = out.items().to_vec();
                for chunk in keys.chunks(BATCH_WRITE_ITEMS) {
                    self.delete_batch(chunk.to_vec()).await?;
                    deleted += chunk.len();
                }
                match out.last_evaluated_key {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes up to 25 items by key, asking again for unprocessed ones, with backoff.
    async fn delete_batch(&self, keys: Vec<Item>) -> Result<(), ReadModelError> {
        let mut requests = keys
            .into_iter()
            .map(|key| {
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(|e| corrupt(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut idle = 0;
        let mut backoff = Duration::from_millis(25);
        while !requests.is_empty() {
            let asked = requests.len();
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(&mut requests))
                .send()
                .await
                .map_err(from_sdk)?;
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if requests.len() == asked {
                idle += 1;
                if idle >= BATCH_WRITE_IDLE_ROUNDS {
                    return Err(ReadModelError::Unavailable(
                        format!("{asked} deletes left unprocessed {idle} times").into(),
                    ));
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            } else {
                idle = 0;
                backoff = Duration::from_millis(25);
            }
        }
        Ok(())
    }
}
