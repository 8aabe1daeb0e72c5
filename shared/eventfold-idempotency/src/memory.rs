//! In-memory idempotency store for tests and single-process use; passes the same contract as
//! DynamoDB.

use super::{Acquired, IdempotencyError, IdempotencyRecord, IdempotencyStore, Status};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

/// Records in a process-local map; each call is atomic under one lock, as a conditional write
/// is in DynamoDB.
#[derive(Debug, Default)]
pub struct MemoryIdempotencyStore {
    records: Mutex<HashMap<String, IdempotencyRecord>>,
}

impl MemoryIdempotencyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, IdempotencyRecord>) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-call; every call leaves the
        // map whole, so carry on with it.
        let mut guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

fn ours(stored: Option<&IdempotencyRecord>, lock_id: &str) -> bool {
    stored.is_some_and(|r| r.status == Status::InProgress && r.lock_id == lock_id)
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn acquire(
        &self,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Acquired, IdempotencyError> {
        Ok(self.with(|records| match records.get(&record.record_key) {
            Some(held) if held.is_live(now) => Acquired::Held(held.clone()),
            _ => {
                records.insert(record.record_key.clone(), record.clone());
                Acquired::Locked
            }
        }))
    }

    async fn complete(&self, record: &IdempotencyRecord) -> Result<(), IdempotencyError> {
        self.with(|records| {
            if !ours(records.get(&record.record_key), &record.lock_id) {
                return Err(IdempotencyError::LockLost {
                    record_key: record.record_key.clone(),
                });
            }
            records.insert(record.record_key.clone(), record.clone());
            Ok(())
        })
    }

    async fn release(&self, record_key: &str, lock_id: &str) -> Result<(), IdempotencyError> {
        self.with(|records| {
            if !ours(records.get(record_key), lock_id) {
                return Err(IdempotencyError::LockLost {
                    record_key: record_key.to_owned(),
                });
            }
            records.remove(record_key);
            Ok(())
        })
    }

    async fn get(&self, record_key: &str) -> Result<Option<IdempotencyRecord>, IdempotencyError> {
        Ok(self.with(|records| records.get(record_key).cloned()))
    }
}
