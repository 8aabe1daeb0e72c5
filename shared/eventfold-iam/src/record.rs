//! Every call the proxy checked (function, action, resource, allowed or denied, how many
//! times), the denials with AWS's message, and files of them: a stack writes its calls to
//! `$EVENTFOLD_IAM_RECORD/{stack}.json` when it stops, so `eventfold iam report` can read a
//! whole test run's.
//!
//! Resources are recorded by label, the template's logical id (`ReadModelsTable`,
//! `ReadModelsTable/index/gsi1`, `EventsTable/stream`, `ProjectorQueue`), so the calls of
//! stacks with different names add up.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
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

/// The calls and denials of one stack.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<BTreeMap<Call, u64>>,
    denials: Mutex<Vec<Denial>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// Counts `call`.
    pub fn record(&self, call: Call) {
        *lock(&self.calls).entry(call).or_default() += 1;
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

    /// Writes the calls to `dir/{name}.json`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let calls: Vec<_> = self
            .calls()
            .into_iter()
            .map(|(c, n)| json!({"call": c, "count": n}))
            .collect();
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&calls)?)
            .with_context(|| format!("writing {}", path.display()))
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
