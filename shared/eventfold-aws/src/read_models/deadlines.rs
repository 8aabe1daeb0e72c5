//! The sagas' deadline index in the read-models table ([`DeadlineIndex`]).
//!
//! One item per instance: `pk = _saga#{saga}`, `sk = {saga stream}`, `version` (N, the saga
//! stream's version the entry was written for) and, while the instance waits, `due_at` (S,
//! RFC 3339 with nanoseconds, fixed width, so text order is time order), `correlation_id`
//! (S) and the list index keys `gsi1pk = _due#{saga}`, `gsi1sk = {due_at}#{saga stream}`.
//! An instance that does not wait keeps the item without them (out of the sparse index), so
//! its version still turns away older writes, for [`IDLE_ENTRY_RETENTION_DAYS`]: then the
//! table's TTL ([`EXPIRES_AT_EPOCH`]) removes it, so the index does not keep one item per
//! instance ever run. Past that no older write of the instance is still on its way (SQS keeps
//! a message at most 14 days), and if one were, the deadline it sets is checked against the
//! instance's state before anything acts on it. A waiting entry carries no TTL.
//!
//! Setting or removing a deadline is one `PutItem`, conditional on the stored version being
//! at most the written one (it replaces the instance's earlier entry: no read of the old due
//! time is needed; a refused write was for an older state and is dropped); a tick's `due` is
//! one `Query` of the index up to the due time, whatever the number of open instances. The
//! saga runner's batches write their entries with their checkpoint moves in one
//! `TransactWriteItems` ([`DeadlineIndex::write_together`]), each item under its own condition.
//!
//! The index is eventually consistent: a tick may miss a deadline set a moment ago (the next
//! tick finds it) or list one just removed (the runner checks every entry against the
//! instance's state before acting).

use super::{DynamoReadModelStore, INDEX, TRANSACTION_ITEMS, corrupt, get_s};
use crate::dynamodb::{n, s};
use crate::faults::from_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
use eventfold_consumers::projection::ReadModelError;
use eventfold_consumers::saga::{
    CheckpointMove, Deadline, DeadlineIndex, DeadlineWrite, DueInstance, Together,
};
use std::collections::HashMap;

/// The read-models table's TTL attribute (epoch seconds), set only on the entries of
/// instances that no longer wait.
pub const EXPIRES_AT_EPOCH: &str = "expires_at_epoch";

/// Days the entry of an instance that no longer waits is kept (see the module docs).
pub const IDLE_ENTRY_RETENTION_DAYS: i64 = 30;

fn instance_pk(saga: &str) -> String {
    format!("_saga#{saga}")
}

fn index_pk(saga: &str) -> String {
    format!("_due#{saga}")
}

/// The fixed-width text of `t` (e.g. `2031-05-06T07:08:09.123456789Z`).
fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<DueInstance, ReadModelError> {
    let due_at = get_s(item, "due_at")?;
    let due_at = DateTime::parse_from_rfc3339(due_at)
        .map_err(|e| corrupt(format!("due_at {due_at}: {e}")))?
        .with_timezone(&Utc);
    Ok(DueInstance {
        stream_id: get_s(item, "sk")?.to_owned(),
        deadline: Deadline {
            due_at,
            correlation_id: get_s(item, "correlation_id")?.to_owned(),
        },
    })
}

/// The condition of an entry's write: none stored yet, or one for this version or older.
const NEWER_OR_SAME: &str = "attribute_not_exists(pk) OR #v <= :v";

/// The item of the entry of instance `stream_id` of `saga` as of `version`.
fn entry_item(
    saga: &str,
    stream_id: &str,
    version: u64,
    deadline: Option<&Deadline>,
) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("pk".to_owned(), s(instance_pk(saga))),
        ("sk".to_owned(), s(stream_id)),
        ("version".to_owned(), n(version)),
    ]);
    if let Some(d) = deadline {
        let due_at = time_text(d.due_at);
        item.insert("gsi1pk".to_owned(), s(index_pk(saga)));
        item.insert("gsi1sk".to_owned(), s(format!("{due_at}#{stream_id}")));
        item.insert("due_at".to_owned(), s(due_at));
        item.insert("correlation_id".to_owned(), s(&d.correlation_id));
    } else {
        let expires = Utc::now().timestamp() + IDLE_ENTRY_RETENTION_DAYS * 86_400;
        item.insert(EXPIRES_AT_EPOCH.to_owned(), n(expires));
    }
    item
}

#[async_trait]
impl DeadlineIndex for DynamoReadModelStore {
    async fn set_deadline(
        &self,
        saga: &str,
        stream_id: &str,
        version: u64,
        deadline: Option<&Deadline>,
    ) -> Result<(), ReadModelError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry_item(saga, stream_id, version, deadline)))
            .condition_expression(NEWER_OR_SAME)
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":v", n(version));
        match request.send().await {
            Ok(_) => Ok(()),
            // A newer state's entry is in place: this one is out of date.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(from_sdk(e)),
        }
    }

    /// One `TransactWriteItems` of every entry (a conditional `Put` each) and checkpoint move
    /// (a conditional `Update` each); a cancelled transaction (a condition failed) writes
    /// nothing, and so does a batch past one transaction's 100 items.
    async fn write_together(
        &self,
        saga: &str,
        deadlines: &[DeadlineWrite],
        moves: &[CheckpointMove],
    ) -> Result<Together, ReadModelError> {
        if deadlines.len() + moves.len() > TRANSACTION_ITEMS {
            return Ok(Together::NotWritten);
        }
        let mut items = Vec::with_capacity(deadlines.len() + moves.len());
        for d in deadlines {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(entry_item(
                    saga,
                    &d.stream_id,
                    d.version,
                    d.deadline.as_ref(),
                )))
                .condition_expression(NEWER_OR_SAME)
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", n(d.version))
                .build()
                .map_err(|e| corrupt(e.to_string()))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        for m in moves {
            let update = self.checkpoint_update(saga, &m.stream_id, m.expected, m.new)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Together::Written),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(_)) => {
                    Ok(Together::NotWritten)
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    async fn due(
        &self,
        saga: &str,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueInstance>, ReadModelError> {
        // `#` follows the due time in every sort key and sorts before `$`: everything due at
        // or before `until` sorts before "{until}$".
        let bound = format!("{}$", time_text(until));
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX)
                .key_condition_expression("gsi1pk = :p AND gsi1sk < :bound")
                .expression_attribute_values(":p", s(index_pk(saga)))
                .expression_attribute_values(":bound", s(&bound))
                .scan_index_forward(true)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(from_sdk)?;
            for item in page.items() {
                out.push(decode(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_sort_as_text_in_time_order() {
        let times = [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T00:00:01Z",
            "2026-01-01T09:59:59.999999999Z",
            "2026-01-01T10:00:00Z",
        ]
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .expect("valid")
                .with_timezone(&Utc)
        });
        let texts: Vec<String> = times.iter().map(|t| time_text(*t)).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        assert!(texts.iter().all(|t| t.len() == texts[0].len()), "{texts:?}");
        let key = format!("{}#acme/Saga-x", texts[1]);
        assert!(
            key < format!("{}$", texts[1]),
            "due exactly at the bound is listed"
        );
        assert!(key > format!("{}$", texts[0]));
    }
}
