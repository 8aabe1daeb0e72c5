//! In-memory read-model store for unit tests; same contract as the DynamoDB one. It also
//! holds the sagas' deadline index, as the read-models table does.

use super::{Doc, Found, ListQuery, ModelKey, Page, ReadModelError, ReadModelStore, ViewPointer};
use crate::saga::{CheckpointMove, Deadline, DeadlineIndex, DeadlineWrite, DueInstance, Together};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default, Debug)]
struct Inner {
    docs: BTreeMap<(String, String, String), Doc>, // (tenant, view, key)
    checkpoints: HashMap<(String, String), u64>,   // (view, stream)
    deadlines: BTreeMap<(String, String), (u64, Option<Deadline>)>, // (saga, stream): as of version
    pointers: HashMap<String, ViewPointer>,        // view
}

/// Views in a process-local map.
#[derive(Debug, Default)]
pub struct MemoryReadModelStore {
    inner: Mutex<Inner>,
}

impl MemoryReadModelStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each mutation completes under the lock, so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every visible document of `view` for `tenant`, by key (for comparisons in tests).
    pub fn snapshot(&self, tenant: &str, view: &str) -> BTreeMap<String, Value> {
        self.lock()
            .docs
            .iter()
            .filter(|((t, v, _), d)| t == tenant && v == view && !d.data.is_null())
            .map(|((_, _, k), d)| (k.clone(), d.data.clone()))
            .collect()
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<String>, ReadModelError> {
    cursor
        .map(|c| {
            c.strip_prefix("m:")
                .map(str::to_owned)
                .ok_or(ReadModelError::InvalidCursor)
        })
        .transpose()
}

#[async_trait]
impl ReadModelStore for MemoryReadModelStore {
    async fn get(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<Doc>, ReadModelError> {
        Ok(self
            .lock()
            .docs
            .get(&(tenant.to_owned(), view.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: Doc,
        expected: u64,
    ) -> Result<(), ReadModelError> {
        let mut inner = self.lock();
        let id = (tenant.to_owned(), view.to_owned(), doc.key.clone());
        let current = inner.docs.get(&id).map_or(0, |d| d.checkpoint);
        if current != expected {
            return Err(ReadModelError::Conflict {
                view: view.to_owned(),
                key: doc.key,
            });
        }
        inner.docs.insert(id, doc);
        Ok(())
    }

    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .lock()
            .checkpoints
            .get(&(view.to_owned(), stream_id.to_owned()))
            .copied()
            .unwrap_or(0))
    }

    async fn get_many(&self, keys: &[ModelKey]) -> Result<Vec<Found>, ReadModelError> {
        // One lock: every key read at the same instant, as one batched request would.
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|k| match k {
                ModelKey::Doc { tenant, view, key } => Found::Doc(
                    inner
                        .docs
                        .get(&(tenant.clone(), view.clone(), key.clone()))
                        .cloned(),
                ),
                ModelKey::Checkpoint { view, stream_id } => Found::Checkpoint(
                    inner
                        .checkpoints
                        .get(&(view.clone(), stream_id.clone()))
                        .copied()
                        .unwrap_or(0),
                ),
                ModelKey::Pointer { view } => Found::Pointer(
                    inner
                        .pointers
                        .get(view)
                        .cloned()
                        .unwrap_or_else(ViewPointer::initial),
                ),
            })
            .collect())
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
        let mut inner = self.lock();
        let cp = (view.to_owned(), stream_id.to_owned());
        if inner.checkpoints.get(&cp).copied().unwrap_or(0) != expected {
            return Err(ReadModelError::Conflict {
                view: view.to_owned(),
                key: stream_id.to_owned(),
            });
        }
        for (key, counters) in deltas {
            let doc = inner
                .docs
                .entry((tenant.to_owned(), view.to_owned(), key.clone()))
                .or_insert_with(|| Doc {
                    key,
                    data: json!({}),
                    checkpoint: 0,
                    index: None,
                });
            for (name, delta) in counters {
                let now = doc.data.get(&name).and_then(Value::as_i64).unwrap_or(0);
                doc.data[name.as_str()] = json!(now.saturating_add(delta));
            }
        }
        inner.checkpoints.insert(cp, new);
        Ok(())
    }

    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: ListQuery,
    ) -> Result<Page, ReadModelError> {
        let after = parse_cursor(query.cursor.as_deref())?;
        let inner = self.lock();
        let mut rows: Vec<(String, &Doc)> = inner
            .docs
            .iter()
            .filter(|((t, v, _), d)| t == tenant && v == view && !d.data.is_null())
            .filter_map(|(_, d)| match &query.index {
                None => Some((d.key.clone(), d)),
                Some(p) => d
                    .index
                    .as_ref()
                    .filter(|(part, _)| part == p)
                    .map(|(_, sort)| (format!("{sort}\u{0}{}", d.key), d)),
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if query.index.is_some() {
            rows.reverse(); // lists are newest first
        }
        // Seek past the cursor as DynamoDB's ExclusiveStartKey does: the row it names may
        // have vanished or moved since.
        let descending = query.index.is_some();
        let start = match &after {
            None => 0,
            Some(a) => rows
                .iter()
                .position(|(pos, _)| if descending { pos < a } else { pos > a })
                .unwrap_or(rows.len()),
        };
        let limit = query.limit.max(1);
        let page: Vec<_> = rows.iter().skip(start).take(limit).collect();
        let next = (start + page.len() < rows.len())
            .then(|| page.last().map(|(pos, _)| format!("m:{pos}")))
            .flatten();
        Ok(Page {
            docs: page.into_iter().map(|(_, d)| (*d).clone()).collect(),
            next,
        })
    }

    async fn pointer(&self, view: &str) -> Result<ViewPointer, ReadModelError> {
        Ok(self
            .lock()
            .pointers
            .get(view)
            .cloned()
            .unwrap_or_else(ViewPointer::initial))
    }

    async fn set_pointer(&self, view: &str, pointer: &ViewPointer) -> Result<(), ReadModelError> {
        let mut inner = self.lock();
        let stored = inner.pointers.get(view).map_or(0, |p| p.rev);
        if pointer.rev != stored + 1 {
            return Err(ReadModelError::Conflict {
                view: view.to_owned(),
                key: "pointer".to_owned(),
            });
        }
        inner.pointers.insert(view.to_owned(), pointer.clone());
        Ok(())
    }

    async fn drop_view(&self, tenants: &[String], view: &str) -> Result<usize, ReadModelError> {
        let mut inner = self.lock();
        let before = inner.docs.len() + inner.checkpoints.len();
        inner
            .docs
            .retain(|(t, v, _), _| !(v == view && tenants.contains(t)));
        inner.checkpoints.retain(|(v, _), _| v != view);
        Ok(before - inner.docs.len() - inner.checkpoints.len())
    }
}

#[async_trait]
impl DeadlineIndex for MemoryReadModelStore {
    async fn set_deadline(
        &self,
        saga: &str,
        stream_id: &str,
        version: u64,
        deadline: Option<&Deadline>,
    ) -> Result<(), ReadModelError> {
        let mut inner = self.lock();
        let entry = inner
            .deadlines
            .entry((saga.to_owned(), stream_id.to_owned()))
            .or_insert((0, None));
        if entry.0 <= version {
            *entry = (version, deadline.cloned());
        }
        Ok(())
    }

    async fn due(
        &self,
        saga: &str,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueInstance>, ReadModelError> {
        let inner = self.lock();
        let mut due: Vec<DueInstance> = inner
            .deadlines
            .iter()
            .filter_map(|((s, stream), (_, d))| {
                let d = d.as_ref().filter(|d| s == saga && d.due_at <= until)?;
                Some(DueInstance {
                    stream_id: stream.clone(),
                    deadline: d.clone(),
                })
            })
            .collect();
        due.sort_by(|a, b| {
            (a.deadline.due_at, &a.stream_id).cmp(&(b.deadline.due_at, &b.stream_id))
        });
        due.truncate(limit);
        Ok(due)
    }

    async fn write_together(
        &self,
        saga: &str,
        deadlines: &[DeadlineWrite],
        moves: &[CheckpointMove],
    ) -> Result<Together, ReadModelError> {
        let mut inner = self.lock();
        // Every condition first, as one transaction would check them: all or nothing.
        let stale = deadlines.iter().any(|d| {
            let key = (saga.to_owned(), d.stream_id.clone());
            inner
                .deadlines
                .get(&key)
                .is_some_and(|(v, _)| *v > d.version)
        });
        let moved = moves.iter().any(|m| {
            let key = (saga.to_owned(), m.stream_id.clone());
            inner.checkpoints.get(&key).copied().unwrap_or(0) != m.expected
        });
        if stale || moved {
            return Ok(Together::NotWritten);
        }
        for d in deadlines {
            let key = (saga.to_owned(), d.stream_id.clone());
            inner.deadlines.insert(key, (d.version, d.deadline.clone()));
        }
        for m in moves {
            let key = (saga.to_owned(), m.stream_id.clone());
            inner.checkpoints.insert(key, m.new);
        }
        Ok(Together::Written)
    }
}
