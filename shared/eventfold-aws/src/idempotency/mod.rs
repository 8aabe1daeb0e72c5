//! Idempotency on DynamoDB: the [`DynamoIdempotencyStore`] for `eventfold_idempotency`, its
//! settings from the environment, and the `lambda_http` glue ([`http`]) that turns an
//! `Idempotency-Key` header into a guarded handler call.
//!
//! Table (`IdempotencyTable` in the template): key `pk` (S), one item per scoped key:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `pk` | S | `Scope::record_key`: SHA-256 hex of tenant, actor and key |
//! | `tenant`, `idempotency_key` | S | in clear, for operations (the actor is not stored) |
//! | `status` | S | `INPROGRESS` or `COMPLETED` |
//! | `payload_hash` | S | SHA-256 hex of the canonical request |
//! | `lock_id` | S | id of the lock that wrote the item |
//! | `expires_at` | N | epoch milliseconds; the expiry the code checks |
//! | `expires_at_epoch` | N | epoch seconds, rounded up: the table's TTL attribute, a backstop |
//! | `response` | M | `COMPLETED` only: `status` (N), `headers` (L of [name, value]), `body` (S) |
//!
//! Every operation is one request: the lock is a conditional `PutItem` that returns the old
//! item when refused; complete is a conditional `PutItem`, release a conditional `DeleteItem`.

pub mod http;

use crate::config::ConfigError;
use crate::dynamodb::{item_size, n, s};
use crate::event_store::MAX_ITEM_BYTES;
use crate::faults::from_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use eventfold_idempotency::{
    Acquired, Idempotency, IdempotencyConfig, IdempotencyError, IdempotencyRecord,
    IdempotencyStore, PayloadHash, Status, StoredResponse,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// Only the lock that wrote a record may complete or delete it, and only while in progress.
const OURS: &str = "lock_id = :lock AND #status = :in_progress";

/// Idempotency records on a DynamoDB table keyed `pk` (S).
#[derive(Debug, Clone)]
pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
}

table_store!(DynamoIdempotencyStore);

fn epoch_seconds_rounded_up(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_millis() > 0)
}

impl DynamoIdempotencyStore {
    /// The item of `record`.
    pub fn encode(record: &IdempotencyRecord) -> Item {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(&record.record_key)),
            ("tenant".to_owned(), s(&record.tenant)),
            ("idempotency_key".to_owned(), s(&record.key)),
            ("status".to_owned(), s(record.status.as_str())),
            ("payload_hash".to_owned(), s(record.payload_hash.as_str())),
            ("lock_id".to_owned(), s(&record.lock_id)),
            (
                "expires_at".to_owned(),
                n(record.expires_at.timestamp_millis()),
            ),
            (
                "expires_at_epoch".to_owned(),
                n(epoch_seconds_rounded_up(record.expires_at)),
            ),
        ]);
        if let Some(r) = &record.response {
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| AttributeValue::L(vec![s(k), s(v)]))
                .collect();
            item.insert(
                "response".to_owned(),
                AttributeValue::M(HashMap::from([
                    ("status".to_owned(), n(r.status)),
                    ("headers".to_owned(), AttributeValue::L(headers)),
                    ("body".to_owned(), s(&r.body)),
                ])),
            );
        }
        item
    }

    /// Reads an item back.
    pub fn decode(item: &Item) -> Result<IdempotencyRecord, IdempotencyError> {
        let record_key = match item.get("pk") {
            Some(AttributeValue::S(k)) => k.clone(),
            _ => "?".to_owned(),
        };
        let corrupt = |detail: String| IdempotencyError::Corrupt {
            record_key: record_key.clone(),
            detail,
        };
        let get_s = |m: &Item, k: &str| match m.get(k) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(corrupt(format!("attribute {k} missing or not a string"))),
        };
        let get_n = |m: &Item, k: &str| match m.get(k) {
            Some(AttributeValue::N(v)) => v
                .parse::<i64>()
                .map_err(|_| corrupt(format!("attribute {k}={v} is not an integer"))),
            _ => Err(corrupt(format!("attribute {k} missing or not a number"))),
        };
        let status = get_s(item, "status")?;
        let status =
            Status::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status}")))?;
        let expires_ms = get_n(item, "expires_at")?;
        let expires_at = DateTime::from_timestamp_millis(expires_ms)
            .ok_or_else(|| corrupt(format!("expires_at {expires_ms} out of range")))?;
        let response = match item.get("response") {
            None => None,
            Some(AttributeValue::M(m)) => {
                let status = u16::try_from(get_n(m, "status")?)
                    .map_err(|_| corrupt("response status out of range".into()))?;
                let Some(AttributeValue::L(list)) = m.get("headers") else {
                    return Err(corrupt("response headers missing or not a list".into()));
                };
                let headers = list
                    .iter()
                    .map(|h| match h {
                        AttributeValue::L(pair) => match pair.as_slice() {
                            [AttributeValue::S(k), AttributeValue::S(v)] => {
                                Ok((k.clone(), v.clone()))
                            }
                            _ => Err(corrupt("a header is not [name, value]".into())),
                        },
                        _ => Err(corrupt("a header is not a list".into())),
                    })
                    .collect::<Result<_, _>>()?;
                Some(StoredResponse {
                    status,
                    headers,
                    body: get_s(m, "body")?,
                })
            }
            Some(_) => return Err(corrupt("response is not a map".into())),
        };
        Ok(IdempotencyRecord {
            record_key: record_key.clone(),
            tenant: get_s(item, "tenant")?,
            key: get_s(item, "idempotency_key")?,
            status,
            payload_hash: PayloadHash::from_hex(get_s(item, "payload_hash")?),
            lock_id: get_s(item, "lock_id")?,
            expires_at,
            response,
        })
    }

    fn sized(record: &IdempotencyRecord) -> Result<Item, IdempotencyError> {
        let item = Self::encode(record);
        let size = item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(IdempotencyError::TooLarge {
                size,
                limit: MAX_ITEM_BYTES,
            });
        }
        Ok(item)
    }

    fn lock_lost(record_key: &str) -> IdempotencyError {
        IdempotencyError::LockLost {
            record_key: record_key.to_owned(),
        }
    }
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn acquire(
        &self,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Acquired, IdempotencyError> {
        let item = Self::sized(record)?;
        // Normally one round: a refused put carries the holder. A store that does not return
        // it (some emulators) costs a read, and a holder deleted in between another put.
        for _ in 0..3 {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let refused = match result {
                Ok(_) => return Ok(Acquired::Locked),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => c.item.clone(),
                    _ => return Err(from_sdk(e)),
                },
            };
            let held = match refused {
                Some(item) => Some(item),
                None => {
                    self.client
                        .get_item()
                        .table_name(&self.table)
                        .key("pk", s(&record.record_key))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(from_sdk)?
                        .item
                }
            };
            if let Some(item) = held {
                return Ok(Acquired::Held(Self::decode(&item)?));
            }
        }
        Err(IdempotencyError::Unavailable(
            format!(
                "lock on {} neither taken nor held after 3 attempts",
                record.record_key
            )
            .into(),
        ))
    }

    async fn complete(&self, record: &IdempotencyRecord) -> Result<(), IdempotencyError> {
        let item = Self::sized(record)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(OURS)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":lock", s(&record.lock_id))
            .expression_attribute_values(":in_progress", s(Status::InProgress.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(Self::lock_lost(&record.record_key))
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    async fn release(&self, record_key: &str, lock_id: &str) -> Result<(), IdempotencyError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(record_key))
            .condition_expression(OURS)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":lock", s(lock_id))
            .expression_attribute_values(":in_progress", s(Status::InProgress.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => {
                    Err(Self::lock_lost(record_key))
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    async fn get(&self, record_key: &str) -> Result<Option<IdempotencyRecord>, IdempotencyError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(record_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        out.item.as_ref().map(Self::decode).transpose()
    }
}

/// Settings of idempotent requests, read once at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencySettings {
    /// Name of the idempotency table (`IDEMPOTENCY_TABLE`).
    pub table: String,
    /// Engine settings: `IDEMPOTENCY_EXPIRES_SECONDS` (default 3600) for completed records,
    /// `IDEMPOTENCY_IN_PROGRESS_SECONDS` (default 10, the function timeout) for locks taken
    /// without a Lambda deadline.
    pub config: IdempotencyConfig,
}

impl IdempotencySettings {
    /// Reads the settings through `lookup`; `None` when `IDEMPOTENCY_TABLE` is unset or empty
    /// (the function then has no idempotency table).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(table) = lookup("IDEMPOTENCY_TABLE").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let seconds = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match lookup(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
                    Ok(_) => Err(ConfigError::Invalid {
                        name,
                        value: v,
                        reason: "must be at least 1".into(),
                    }),
                    Err(e) => Err(ConfigError::Invalid {
                        name,
                        value: v.clone(),
                        reason: e.to_string(),
                    }),
                },
            }
        };
        let defaults = IdempotencyConfig::default();
        Ok(Some(Self {
            table,
            config: IdempotencyConfig {
                expires_after: seconds(
                    "IDEMPOTENCY_EXPIRES_SECONDS",
                    defaults.expires_after.as_secs(),
                )?,
                default_in_progress: seconds(
                    "IDEMPOTENCY_IN_PROGRESS_SECONDS",
                    defaults.default_in_progress.as_secs(),
                )?,
                ..defaults
            },
        }))
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The engine on the DynamoDB table these settings name. The store is type-erased so a
    /// handler holds one engine type whether it runs on DynamoDB or, in unit tests, in memory.
    pub fn engine(&self, sdk: &aws_config::SdkConfig) -> Idempotency<Arc<dyn IdempotencyStore>> {
        Idempotency::new(
            Arc::new(DynamoIdempotencyStore::from_sdk(sdk, &self.table)),
            self.config.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::SdkError;
    use chrono::TimeZone;

    fn service_error(code: &str, status: u16) -> SdkError<PutItemError> {
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        let meta = aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .message("m")
            .build();
        let raw = Response::new(
            StatusCode::try_from(status).expect("status"),
            SdkBody::empty(),
        );
        SdkError::service_error(PutItemError::generic(meta), raw)
    }

    #[test]
    fn refusals_no_retry_fixes_are_not_reported_as_outages() {
        for code in [
            "ValidationException",
            "ResourceNotFoundException",
            "AccessDeniedException",
        ] {
            assert!(
                matches!(
                    from_sdk(service_error(code, 400)),
                    IdempotencyError::Refused(_)
                ),
                "{code}"
            );
        }
        for (code, status) in [
            ("ThrottlingException", 400),
            ("ProvisionedThroughputExceededException", 400),
            ("InternalServerError", 500),
        ] {
            assert!(
                matches!(
                    from_sdk(service_error(code, status)),
                    IdempotencyError::Unavailable(_)
                ),
                "{code}"
            );
        }
    }

    fn record(response: Option<StoredResponse>) -> IdempotencyRecord {
        IdempotencyRecord {
            record_key: "ab".repeat(32),
            tenant: "acme".into(),
            key: "k-1".into(),
            status: if response.is_some() {
                Status::Completed
            } else {
                Status::InProgress
            },
            payload_hash: PayloadHash::from_hex("cd".repeat(32)),
            lock_id: "lock-1".into(),
            expires_at: Utc
                .timestamp_millis_opt(1_800_000_000_001)
                .single()
                .expect("valid"),
            response,
        }
    }

    #[test]
    fn records_round_trip_through_items_with_a_ttl_rounded_up() {
        for r in [
            record(None),
            record(Some(
                StoredResponse::new(201, "{\"ü\":1}")
                    .with_header("content-type", "application/json")
                    .with_header("location", "/x"),
            )),
            record(Some(StoredResponse::new(204, ""))),
        ] {
            let item = DynamoIdempotencyStore::encode(&r);
            assert_eq!(item["expires_at"], n(1_800_000_000_001_i64));
            assert_eq!(item["expires_at_epoch"], n(1_800_000_001_i64));
            assert_eq!(DynamoIdempotencyStore::decode(&item).expect("decodes"), r);
        }
        let whole = Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid");
        assert_eq!(epoch_seconds_rounded_up(whole), 1_800_000_000);
    }

    #[test]
    fn damaged_items_are_corrupt_not_panics() {
        let good = DynamoIdempotencyStore::encode(&record(Some(StoredResponse::new(200, "{}"))));
        for (attr, value) in [
            ("status", s("DONE")),
            ("expires_at", s("soon")),
            ("lock_id", n(1)),
            ("response", s("{}")),
        ] {
            let mut item = good.clone();
            item.insert(attr.to_owned(), value);
            assert!(
                matches!(
                    DynamoIdempotencyStore::decode(&item),
                    Err(IdempotencyError::Corrupt { .. })
                ),
                "{attr}"
            );
        }
    }

    #[test]
    fn settings_default_to_an_hour_and_the_function_timeout() {
        assert!(matches!(
            IdempotencySettings::from_lookup(|_| None),
            Ok(None)
        ));
        let only_table = IdempotencySettings::from_lookup(|k| {
            (k == "IDEMPOTENCY_TABLE").then(|| "idem".to_owned())
        })
        .expect("valid")
        .expect("configured");
        assert_eq!(only_table.table, "idem");
        assert_eq!(only_table.config, IdempotencyConfig::default());
        assert_eq!(only_table.config.expires_after, Duration::from_secs(3600));
        let tuned = IdempotencySettings::from_lookup(|k| match k {
            "IDEMPOTENCY_TABLE" => Some("idem".into()),
            "IDEMPOTENCY_EXPIRES_SECONDS" => Some("60".into()),
            _ => Some("7".into()),
        })
        .expect("valid")
        .expect("configured");
        assert_eq!(tuned.config.expires_after, Duration::from_secs(60));
        assert_eq!(tuned.config.default_in_progress, Duration::from_secs(7));
        for bad in ["0", "soon", "-1"] {
            let r = IdempotencySettings::from_lookup(|k| match k {
                "IDEMPOTENCY_TABLE" => Some("idem".into()),
                "IDEMPOTENCY_EXPIRES_SECONDS" => Some(bad.into()),
                _ => None,
            });
            assert!(matches!(r, Err(ConfigError::Invalid { .. })), "{bad}");
        }
    }
}
