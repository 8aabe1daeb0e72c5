//! The dead-letters table: [`DeadLetterStore`] on DynamoDB.
//!
//! Keys `pk` (S) + `sk` (S), TTL on `expires_at_epoch`. Items:
//!
//! - a dead letter: `pk = {tenant}`, `sk = dl#{id}`, with `id`, `consumer`, `status`,
//!   `stream_id` (when known) as attributes for filters, and the whole letter as JSON in
//!   `letter`. Tenant-scoped: a tenant's reads are one `Query` of its partition; operators
//!   (no tenant) `Scan`, which is fine for a table that holds only what went wrong;
//! - a consumer's failure note: `pk = _note#{consumer}`, `sk = {message id}`, the note as
//!   JSON in `note`, expiring after [`NOTE_TTL_DAYS`] (a message that never reaches the DLQ
//!   leaves nothing behind for long).
//!
//! A status change is one conditional `PutItem` (`#status = open`), so two operators cannot
//! both redrive a letter. A letter no longer open (redriven or discarded) is kept
//! [`RESOLVED_RETENTION_DAYS`] after its change as the record of what was done, then the TTL
//! removes it; an open letter never expires (it waits for an operator), and recording it
//! again opens it without a TTL.

use crate::dynamodb::s;
use crate::faults::from_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use eventfold_consumers::deadletter::{
    Change, DeadLetter, DeadLetterError, DeadLetterStore, FailureNote, Filter, Status,
};
use std::collections::HashMap;

/// Days a failure note is kept.
pub const NOTE_TTL_DAYS: i64 = 14;
/// Days a redriven or discarded letter is kept after its change (module docs).
pub const RESOLVED_RETENTION_DAYS: i64 = 90;
/// The table's TTL attribute (epoch seconds).
pub const EXPIRES_AT_EPOCH: &str = "expires_at_epoch";
const LETTER_PREFIX: &str = "dl#";

type Item = HashMap<String, AttributeValue>;

/// Dead letters and failure notes in one DynamoDB table (see the module docs).
#[derive(Debug, Clone)]
pub struct DynamoDeadLetterStore {
    client: Client,
    table: String,
}

table_store!(DynamoDeadLetterStore);

fn letter_item(l: &DeadLetter) -> Result<Item, DeadLetterError> {
    let json = serde_json::to_string(l).map_err(|e| DeadLetterError::Invalid(e.into()))?;
    let mut item = HashMap::from([
        ("pk".to_owned(), s(&l.tenant)),
        ("sk".to_owned(), s(format!("{LETTER_PREFIX}{}", l.id))),
        ("id".to_owned(), s(&l.id)),
        ("consumer".to_owned(), s(&l.consumer)),
        ("status".to_owned(), s(l.status.as_str())),
        ("letter".to_owned(), s(json)),
    ]);
    if let Some(stream) = &l.stream_id {
        item.insert("stream_id".to_owned(), s(stream));
    }
    if l.status != Status::Open {
        let since = l.changed_at.unwrap_or(l.first_failure_at);
        let expires = since.timestamp() + RESOLVED_RETENTION_DAYS * 86_400;
        item.insert(
            EXPIRES_AT_EPOCH.to_owned(),
            AttributeValue::N(expires.to_string()),
        );
    }
    Ok(item)
}

fn letter_of(item: &Item) -> Result<DeadLetter, DeadLetterError> {
    let Some(AttributeValue::S(json)) = item.get("letter") else {
        return Err(DeadLetterError::Invalid(
            "dead-letter item without a letter".into(),
        ));
    };
    serde_json::from_str(json)
        .map_err(|e| DeadLetterError::Invalid(format!("unreadable letter: {e}").into()))
}

impl DynamoDeadLetterStore {
    async fn get_item(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<DeadLetter>, DeadLetterError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(tenant))
            .key("sk", s(format!("{LETTER_PREFIX}{id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        out.item.as_ref().map(letter_of).transpose()
    }

    /// Every letter item passing `filter`: a `Query` of `tenant`'s partition, or a `Scan`.
    async fn items(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut conditions = vec!["begins_with(sk, :dl)".to_owned()];
        let mut values: Item = HashMap::from([(":dl".to_owned(), s(LETTER_PREFIX))]);
        let mut names: HashMap<String, String> = HashMap::new();
        if let Some(c) = &filter.consumer {
            conditions.push("consumer = :consumer".into());
            values.insert(":consumer".into(), s(c));
        }
        if let Some(st) = filter.status {
            conditions.push("#status = :status".into());
            values.insert(":status".into(), s(st.as_str()));
            names.insert("#status".into(), "status".into());
        }
        if let Some(stream) = &filter.stream_id {
            conditions.push("stream_id = :stream".into());
            values.insert(":stream".into(), s(stream));
        }
        if let Some(id) = id {
            conditions.push("id = :id".into());
            values.insert(":id".into(), s(id));
        }
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let (items, last) = match tenant {
                Some(t) => {
                    let mut values = values.clone();
                    values.insert(":pk".into(), s(t));
                    // The sort-key prefix is part of the key condition; the rest filters.
                    let rest = conditions[1..].join(" AND ");
                    let out = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk AND begins_with(sk, :dl)")
                        .set_filter_expression((!rest.is_empty()).then_some(rest))
                        .set_expression_attribute_values(Some(values))
                        .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
                        .set_exclusive_start_key(start.take())
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    (out.items.unwrap_or_default(), out.last_evaluated_key)
                }
                None => {
                    let out = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .filter_expression(conditions.join(" AND "))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
                        .set_exclusive_start_key(start.take())
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    (out.items.unwrap_or_default(), out.last_evaluated_key)
                }
            };
            for item in &items {
                out.push(letter_of(item)?);
            }
            match last {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    async fn put(
        &self,
        letter: &DeadLetter,
        only_if_open: bool,
    ) -> Result<(), SdkError<PutItemError, aws_smithy_runtime_api::http::Response>> {
        let item =
            letter_item(letter).map_err(|e| SdkError::construction_failure(e.to_string()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if only_if_open {
            put = put
                .condition_expression("#status = :open")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":open", s(Status::Open.as_str()));
        }
        put.send().await.map(|_| ())
    }
}

#[async_trait]
impl DeadLetterStore for DynamoDeadLetterStore {
    async fn record(&self, mut letter: DeadLetter) -> Result<DeadLetter, DeadLetterError> {
        if let Some(old) = self.get_item(&letter.tenant, &letter.id).await? {
            letter.first_failure_at = old.first_failure_at.min(letter.first_failure_at);
        }
        letter.status = Status::Open;
        self.put(&letter, false).await.map_err(from_sdk)?;
        Ok(letter)
    }

    async fn get(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<DeadLetter>, DeadLetterError> {
        match tenant {
            Some(t) => self.get_item(t, id).await,
            None => Ok(self
                .items(None, &Filter::default(), Some(id))
                .await?
                .into_iter()
                .next()),
        }
    }

    async fn list(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut out = self.items(tenant, filter, None).await?;
        out.sort_by(|a, b| (a.first_failure_at, &a.id).cmp(&(b.first_failure_at, &b.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn change(
        &self,
        tenant: &str,
        id: &str,
        change: &Change,
    ) -> Result<DeadLetter, DeadLetterError> {
        let mut letter = self
            .get_item(tenant, id)
            .await?
            .ok_or_else(|| DeadLetterError::NotFound(id.to_owned()))?;
        if letter.status != Status::Open {
            return Err(DeadLetterError::NotOpen {
                id: id.to_owned(),
                status: letter.status,
            });
        }
        letter.status = change.to;
        letter.changed_by = Some(change.by.clone());
        letter.changed_at = Some(change.at);
        letter.reason = change.reason.clone();
        match self.put(&letter, true).await {
            Ok(()) => Ok(letter),
            Err(e)
                if e.as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                let now = self.get_item(tenant, id).await?;
                Err(DeadLetterError::NotOpen {
                    id: id.to_owned(),
                    status: now.map_or(Status::Discarded, |l| l.status),
                })
            }
            Err(e) => Err(from_sdk(e)),
        }
    }

    async fn note(&self, note: &FailureNote) -> Result<(), DeadLetterError> {
        let json = serde_json::to_string(note).map_err(|e| DeadLetterError::Invalid(e.into()))?;
        let expires = note.at.timestamp() + NOTE_TTL_DAYS * 86_400;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("_note#{}", note.consumer)))
            .item("sk", s(&note.message_id))
            .item("note", s(json))
            .item(EXPIRES_AT_EPOCH, AttributeValue::N(expires.to_string()))
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    async fn note_of(
        &self,
        consumer: &str,
        message_id: &str,
    ) -> Result<Option<FailureNote>, DeadLetterError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("_note#{consumer}")))
            .key("sk", s(message_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        let Some(AttributeValue::S(json)) = out.item.as_ref().and_then(|i| i.get("note")) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| DeadLetterError::Invalid(format!("unreadable note: {e}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn expires(item: &Item) -> Option<i64> {
        match item.get(EXPIRES_AT_EPOCH) {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        }
    }

    /// An open letter waits for an operator: no TTL. Once redriven or discarded it expires
    /// `RESOLVED_RETENTION_DAYS` after the change.
    #[test]
    fn only_a_resolved_letter_expires_after_the_retention() {
        let mut letter = eventfold_testkit::dead_letters::letter("t1", "projector", "o-1", 3, 0);
        let item = letter_item(&letter).expect("an item");
        assert_eq!(expires(&item), None);
        let changed: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().expect("a time");
        for status in [Status::Redriven, Status::Discarded] {
            letter.status = status;
            letter.changed_at = Some(changed);
            let item = letter_item(&letter).expect("an item");
            assert_eq!(
                expires(&item),
                Some(changed.timestamp() + RESOLVED_RETENTION_DAYS * 86_400),
                "{status:?}"
            );
        }
    }
}
