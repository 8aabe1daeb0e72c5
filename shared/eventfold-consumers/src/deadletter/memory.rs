//! In-memory dead-letter store for tests and in-process runs; same contract as DynamoDB's.

use super::{Change, DeadLetter, DeadLetterError, DeadLetterStore, FailureNote, Filter, Status};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Inner {
    letters: BTreeMap<(String, String), DeadLetter>, // (tenant, id)
    notes: HashMap<(String, String), FailureNote>,   // (consumer, message id)
}

/// Dead letters in a process-local map.
#[derive(Debug, Default)]
pub struct MemoryDeadLetterStore {
    inner: Mutex<Inner>,
}

impl MemoryDeadLetterStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each mutation completes under the lock, so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetterStore {
    async fn record(&self, mut letter: DeadLetter) -> Result<DeadLetter, DeadLetterError> {
        let mut inner = self.lock();
        let key = (letter.tenant.clone(), letter.id.clone());
        if let Some(old) = inner.letters.get(&key) {
            letter.first_failure_at = old.first_failure_at.min(letter.first_failure_at);
        }
        letter.status = Status::Open;
        inner.letters.insert(key, letter.clone());
        Ok(letter)
    }

    async fn get(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<DeadLetter>, DeadLetterError> {
        Ok(self
            .lock()
            .letters
            .iter()
            .find(|((t, i), _)| i == id && tenant.is_none_or(|want| want == t))
            .map(|(_, l)| l.clone()))
    }

    async fn list(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut out: Vec<DeadLetter> = self
            .lock()
            .letters
            .iter()
            .filter(|((t, _), l)| tenant.is_none_or(|want| want == t) && filter.matches(l))
            .map(|(_, l)| l.clone())
            .collect();
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
        let mut inner = self.lock();
        let letter = inner
            .letters
            .get_mut(&(tenant.to_owned(), id.to_owned()))
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
        Ok(letter.clone())
    }

    async fn note(&self, note: &FailureNote) -> Result<(), DeadLetterError> {
        self.lock().notes.insert(
            (note.consumer.clone(), note.message_id.clone()),
            note.clone(),
        );
        Ok(())
    }

    async fn note_of(
        &self,
        consumer: &str,
        message_id: &str,
    ) -> Result<Option<FailureNote>, DeadLetterError> {
        Ok(self
            .lock()
            .notes
            .get(&(consumer.to_owned(), message_id.to_owned()))
            .cloned())
    }
}
