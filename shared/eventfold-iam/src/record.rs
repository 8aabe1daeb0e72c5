//! Every call the proxy checked (function, action, resource, allowed or denied, how many
//! times), every request as sent (function, operation, resources: a `PublishBatch` is one
//! request but an `sns:Publish` check, a `TransactWriteItems` one request but a check per
//! action it carries), the denials with AWS's message, and files of the calls: a stack writes its calls to
//! `$EVENTFOLD_IAM_RECORD/{stack}-{unique}.json` when it stops, so `eventfold iam report` can read a
//! whole test run's.
//!
//! Resources are recorded by label, the template's logical id (`ReadModelsTable`,
//! `ReadModelsTable/index/gsi1`, `EventsTable/stream`, `ProjectorQueue`), so the calls of
//! stacks with different names add up.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One kind of checked call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Call {
    /// The function's logical id.
    pub function: String,
    /// `service:Action`.
    pub action: String,
    /// The resource's label ([`Labels`]), or its ARN when it is not the template's.
    pub resource: String,
    /// Whether the role allowed it.
    pub allowed: bool,
}

/// One kind of request as the function sent it: one per request, whatever checks it needed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The function's logical id.
    pub function: String,
    /// `service:Operation` as sent (`sns:PublishBatch`, `dynamodb:TransactWriteItems`).
    pub operation: String,
    /// The labels of the resources its checks name, distinct, joined by `+`.
    pub resources: String,
}

/// A denied call, with the message the function got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// The function's logical id.
    pub function: String,
    /// `service:Action` (or the unclassified request).
    pub action: String,
    /// The resource ARN.
    pub resource: String,
    /// AWS's message.
    pub message: String,
}

/// The calls and denials of one stack, kept in memory and, when given a file, written to it
/// whenever a new kind of call appears and at [`Recorder::flush`] (so a stack that is never
/// dropped, e.g. a test's static one, still leaves its calls behind).
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<BTreeMap<Call, u64>>,
    requests: Mutex<BTreeMap<Request, u64>>,
    denials: Mutex<Vec<Denial>>,
    file: Mutex<Option<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// A recorder that writes its calls to `file`.
    pub fn to_file(file: PathBuf) -> Self {
        Self {
            file: Mutex::new(Some(file)),
            ..Self::default()
        }
    }

    /// Counts `call` (and writes the file when it is a new kind).
    pub fn record(&self, call: Call) {
        let mut calls = lock(&self.calls);
        let count = calls.entry(call).or_default();
        *count += 1;
        if *count == 1 {
            self.write_locked(&calls);
        }
    }

    /// Counts one request as sent (kept in memory only: the file is the calls').
    pub fn request(&self, request: Request) {
        *lock(&self.requests).entry(request).or_default() += 1;
    }

    /// Every kind of request with its count.
    pub fn requests(&self) -> BTreeMap<Request, u64> {
        lock(&self.requests).clone()
    }

    /// Writes the file with the counts so far.
    pub fn flush(&self) {
        let calls = lock(&self.calls);
        self.write_locked(&calls);
    }

    /// Stops writing and removes what was written: for a test whose calls are deliberately
    /// outside the roles, which the run's report must not count.
    pub fn forget_file(&self) {
        if let Some(path) = lock(&self.file).take() {
            std::fs::remove_file(path).ok();
        }
    }

    fn write_locked(&self, calls: &BTreeMap<Call, u64>) {
        let file = lock(&self.file);
        let Some(path) = file.as_ref() else {
            return;
        };
        let entries: Vec<_> = calls
            .iter()
            .map(|(c, n)| json!({"call": c, "count": n}))
            .collect();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&entries).unwrap_or_default(),
                )
            });
        if let Err(e) = written {
            eprintln!("eventfold-iam: could not write {}: {e}", path.display());
        }
    }

    /// Keeps `denial`.
    pub fn deny(&self, denial: Denial) {
        lock(&self.denials).push(denial);
    }

    /// Every kind of call with its count.
    pub fn calls(&self) -> BTreeMap<Call, u64> {
        lock(&self.calls).clone()
    }

    /// Every denial, in order.
    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.denials).clone()
    }
}

/// Reads and adds up every `*.json` call file in `dir`.
pub fn read_calls(dir: &Path) -> Result<BTreeMap<Call, u64>> {
    #[derive(Deserialize)]
    struct Entry {
        call: Call,
        count: u64,
    }
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let entries: Vec<Entry> = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a call file", path.display()))?;
        for e in entries {
            *out.entry(e.call).or_default() += e.count;
        }
    }
    Ok(out)
}

/// The template's resource ARNs and their labels, both ways.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// (ARN, label), longest ARN first.
    pairs: Vec<(String, String)>,
}

impl Labels {
    /// Labels from (ARN, label) pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut pairs: Vec<(String, String)> = pairs.into_iter().collect();
        pairs.sort_by_key(|(arn, _)| std::cmp::Reverse(arn.len()));
        Self { pairs }
    }

    /// The label of `arn`: a template resource's logical id, plus what follows its ARN after
    /// a `/` (`Table/index/gsi1`); else the ARN itself.
    pub fn label(&self, arn: &str) -> String {
        for (known, label) in &self.pairs {
            if arn == known {
                return label.clone();
            }
            if let Some(rest) = arn
                .strip_prefix(known.as_str())
                .filter(|r| r.starts_with('/'))
            {
                return format!("{label}{rest}");
            }
        }
        arn.to_owned()
    }

    /// The ARN of `label` in this stack (the inverse of [`Self::label`]).
    pub fn arn(&self, label: &str) -> String {
        for (arn, known) in &self.pairs {
            if label == known {
                return arn.clone();
            }
        }
        for (arn, known) in &self.pairs {
            if let Some(rest) = label
                .strip_prefix(known.as_str())
                .filter(|r| r.starts_with('/'))
            {
                return format!("{arn}{rest}");
            }
        }
        label.to_owned()
    }
}
