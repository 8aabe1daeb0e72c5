//! The [`KeyRing`] on AWS: per (tenant, data subject) a data key made by KMS
//! (`GenerateDataKey`, AES-256) and kept wrapped (its KMS ciphertext) in the keys table;
//! unwrapped with `Decrypt` when a reader needs it. Put it behind an
//! [`eventfold::CachedKeyRing`] so a warm instance asks neither for a known subject.
//!
//! **Keys table item** (key `subject` = `{tenant}/{subject}`):
//! `kid` (S), `wrapped` (B, the KMS ciphertext of the data key), `state` (`active`), or,
//! after a forget, only `state` = `forgotten` and `forgotten_at`: the wrapped key is
//! overwritten, so no copy of it remains in the table, and the tombstone refuses a new key.
//!
//! **Races.** A new key is put with `attribute_not_exists(subject)`: of two creators, the
//! loser reads the winner's item and uses its key (or learns the subject was forgotten). A
//! forget overwrites unconditionally (idempotent) and returns the item it replaced.
//!
//! The KMS encryption context `{tenant, subject}` binds each wrapped key to its subject: a
//! wrapped key copied to another subject's item does not decrypt.

use crate::faults::SdkFailure;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_runtime_api::client::result::SdkError;
use eventfold::keyring::{KeyError, KeyRing, SubjectKey};
use eventfold::personal::DataKey;
use std::collections::HashMap;

/// State of a live key.
const ACTIVE: &str = "active";
/// State of a tombstone.
const FORGOTTEN: &str = "forgotten";

/// Data keys in the keys table, wrapped by a KMS key.
#[derive(Debug, Clone)]
pub struct KmsKeyRing {
    dynamo: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    table: String,
    kms_key: String,
}

fn unavailable<E, R>(e: SdkError<E, R>) -> KeyError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    KeyError::Unavailable(Box::new(SdkFailure::new(e)))
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn status_of(item: Option<&HashMap<String, AttributeValue>>) -> SubjectKey {
    match item.and_then(|i| text(i, "state")).as_deref() {
        None => SubjectKey::None,
        Some(FORGOTTEN) => SubjectKey::Forgotten,
        Some(_) => SubjectKey::Active,
    }
}

impl KmsKeyRing {
    /// Keys in `table`, wrapped by the KMS key `kms_key` (id, ARN or alias).
    pub fn new(
        dynamo: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
        table: impl Into<String>,
        kms_key: impl Into<String>,
    ) -> Self {
        Self {
            dynamo,
            kms,
            table: table.into(),
            kms_key: kms_key.into(),
        }
    }

    /// The same with clients built from `sdk`.
    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        table: impl Into<String>,
        kms_key: impl Into<String>,
    ) -> Self {
        Self::new(
            aws_sdk_dynamodb::Client::new(sdk),
            aws_sdk_kms::Client::new(sdk),
            table,
            kms_key,
        )
    }

    /// The keys table.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn pk(tenant: &str, subject: &str) -> AttributeValue {
        AttributeValue::S(format!("{tenant}/{subject}"))
    }

    async fn item(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, KeyError> {
        let got = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("subject", Self::pk(tenant, subject))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(got.item)
    }

    /// The data key of a live item, unwrapped by KMS.
    async fn unwrap(
        &self,
        tenant: &str,
        subject: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Option<DataKey>, KeyError> {
        let (Some(kid), Some(AttributeValue::B(wrapped))) =
            (text(item, "kid"), item.get("wrapped"))
        else {
            return Ok(None);
        };
        let out = self
            .kms
            .decrypt()
            .key_id(&self.kms_key)
            .ciphertext_blob(wrapped.clone())
            .encryption_context("tenant", tenant)
            .encryption_context("subject", subject)
            .send()
            .await
            .map_err(unavailable)?;
        let material = out
            .plaintext
            .and_then(|p| <[u8; 32]>::try_from(p.into_inner()).ok())
            .ok_or_else(|| KeyError::Unavailable("KMS returned no 32-byte data key".into()))?;
        Ok(Some(DataKey::new(kid, material)))
    }

    fn forgotten(tenant: &str, subject: &str) -> KeyError {
        KeyError::Forgotten {
            tenant: tenant.to_owned(),
            subject: subject.to_owned(),
        }
    }

    /// The key of `item` for sealing: live, forgotten, or none.
    async fn sealing_key(
        &self,
        tenant: &str,
        subject: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<DataKey, KeyError> {
        if status_of(Some(item)) == SubjectKey::Forgotten {
            return Err(Self::forgotten(tenant, subject));
        }
        self.unwrap(tenant, subject, item)
            .await?
            .ok_or_else(|| KeyError::Unavailable("keys table item without a key".into()))
    }
}

#[async_trait]
impl KeyRing for KmsKeyRing {
    async fn key_for_sealing(&self, tenant: &str, subject: &str) -> Result<DataKey, KeyError> {
        if let Some(item) = self.item(tenant, subject).await? {
            return self.sealing_key(tenant, subject, &item).await;
        }
        let made = self
            .kms
            .generate_data_key()
            .key_id(&self.kms_key)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("tenant", tenant)
            .encryption_context("subject", subject)
            .send()
            .await
            .map_err(unavailable)?;
        let (Some(plain), Some(wrapped)) = (made.plaintext, made.ciphertext_blob) else {
            return Err(KeyError::Unavailable(
                "KMS GenerateDataKey returned no key".into(),
            ));
        };
        let material = <[u8; 32]>::try_from(plain.into_inner())
            .map_err(|_| KeyError::Unavailable("KMS data key is not 32 bytes".into()))?;
        let key = DataKey::new(eventfold::keyring::random_key().id, material);
        let put = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item("subject", Self::pk(tenant, subject))
            .item("kid", AttributeValue::S(key.id.clone()))
            .item("wrapped", AttributeValue::B(wrapped))
            .item("state", AttributeValue::S(ACTIVE.into()))
            .condition_expression("attribute_not_exists(subject)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(key),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                // Another creator won (or a forget came first): use what is there.
                let item = self.item(tenant, subject).await?.ok_or_else(|| {
                    KeyError::Unavailable("keys table item vanished after a race".into())
                })?;
                self.sealing_key(tenant, subject, &item).await
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn key_for_opening(
        &self,
        tenant: &str,
        subject: &str,
        kid: &str,
    ) -> Result<Option<DataKey>, KeyError> {
        let Some(item) = self.item(tenant, subject).await? else {
            return Ok(None);
        };
        if status_of(Some(&item)) != SubjectKey::Active
            || text(&item, "kid").as_deref() != Some(kid)
        {
            return Ok(None);
        }
        self.unwrap(tenant, subject, &item).await
    }

    async fn forget(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        let out = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item("subject", Self::pk(tenant, subject))
            .item("state", AttributeValue::S(FORGOTTEN.into()))
            .item(
                "forgotten_at",
                AttributeValue::S(chrono::Utc::now().to_rfc3339()),
            )
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(status_of(out.attributes.as_ref()))
    }

    async fn status(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        Ok(status_of(self.item(tenant, subject).await?.as_ref()))
    }
}

/// The key ring a function uses, shared by its sealing store and its subject routes.
pub type SharedKeyRing = std::sync::Arc<dyn KeyRing>;

/// An event store that seals personal fields with the function's key ring.
pub type SealedEventStore = eventfold::SealingStore<crate::DynamoEventStore, SharedKeyRing>;

/// The key ring of a function's settings: `KEYS_TABLE` and `PERSONAL_DATA_KEY` (the KMS key
/// ARN) give a [`KmsKeyRing`] behind an [`eventfold::CachedKeyRing`]; neither gives
/// [`eventfold::NoKeys`] (personal data refused, sealed values redacted); one without the
/// other is a configuration error.
pub fn key_ring_from_lookup(
    sdk: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SharedKeyRing, crate::config::ConfigError> {
    use crate::config::ConfigError;
    let get = |name| lookup(name).filter(|v| !v.is_empty());
    match (get("KEYS_TABLE"), get("PERSONAL_DATA_KEY")) {
        (Some(table), Some(key)) => Ok(std::sync::Arc::new(eventfold::CachedKeyRing::new(
            KmsKeyRing::from_sdk(sdk, table, key),
        ))),
        (None, None) => Ok(std::sync::Arc::new(eventfold::NoKeys)),
        (Some(_), None) => Err(ConfigError::Missing("PERSONAL_DATA_KEY")),
        (None, Some(_)) => Err(ConfigError::Missing("KEYS_TABLE")),
    }
}
