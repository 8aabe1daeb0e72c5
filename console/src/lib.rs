//! The operator console: a web UI over a running stack, local or deployed.
//!
//! Owns the console's screens (overview with lag and stall detection, streams with time
//! travel, trace, projections, sagas, dead letters with bulk redrive/discard, topics and
//! consumer groups), their data ([`source`], [`lag`], [`trace`], [`fold`]) and its HTTP server
//! ([`web`]: server-rendered HTML with `maud`, a little embedded JavaScript, no external
//! assets). It reads the tables through the AWS SDK configuration it is given (the emulator's
//! or the operator's own) and writes only through [`dlq_processor::DlqProcessor`], the same
//! code the dead-letters function runs, and through [`rebuild`] (projection rebuilds, shared
//! with `eventfold projections rebuild`).
//!
//! Must not import: the local runtime (`eventfold-local`: the CLI resolves the stack's names
//! and hands them over, so the console runs the same against AWS), the functions' handlers
//! other than the DLQ processor's operator API, the test kit.
#![forbid(unsafe_code)]

pub mod audit;
pub mod fold;
pub mod iterator_age;
pub mod lag;
mod pages;
pub mod rebuild;
pub mod source;
pub mod trace;
pub mod web;

use chrono::{DateTime, Utc};
use dlq_processor::DlqProcessor;
use source::{Snapshot, Source, Tables};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the console behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Redrive and discard are allowed (otherwise refused in the UI and at the endpoints).
    pub allow_writes: bool,
    /// Work waiting and no progress for this long is a stall.
    pub stall: Duration,
    /// Pause between two snapshots of the tables.
    pub refresh: Duration,
    /// Who the operator is, as written to the audit trail.
    pub operator: String,
    /// How long an old version stays readable (and current) after a promote from the
    /// projections page, before it may be retired.
    pub grace: Duration,
    /// The key ring a rebuild opens personal fields with (the command API's: its keys table
    /// and KMS key); `None` rebuilds the views that copy personal data as redacted.
    pub keys: Option<eventfold_aws::keys::SharedKeyRing>,
}

impl Options {
    /// Read-only, stalls after 5 minutes, a snapshot every 2 seconds, the OS user, a
    /// 30-second grace after a promote.
    pub fn new() -> Self {
        Self {
            allow_writes: false,
            stall: Duration::from_secs(300),
            refresh: Duration::from_secs(2),
            operator: local_operator(),
            grace: Duration::from_secs(30),
            keys: None,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

/// The operator's identity on the local stack: the OS user.
pub fn local_operator() -> String {
    format!(
        "console:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
    )
}

/// Why the operator's identity is unknown.
#[derive(Debug, thiserror::Error)]
#[error("STS GetCallerIdentity failed: {0}")]
pub struct IdentityError(String);

/// The operator's identity in AWS: the caller ARN from STS `GetCallerIdentity`.
pub async fn aws_operator(sdk: &aws_config::SdkConfig) -> Result<String, IdentityError> {
    aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| IdentityError(eventfold_aws::diagnostic::cause_chain(&e)))?
        .arn
        .ok_or_else(|| IdentityError("it returned no ARN".to_owned()))
}

/// One operator action, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub operator: String,
    /// What (`redrive`, `discard`, `rebuild`, `promote`, `retire`, `abandon`).
    pub action: String,
    /// What it was done to: the dead letter, or the view (and version).
    pub letter: String,
    /// What came of it.
    pub outcome: String,
}

/// The console's state, shared by its requests.
pub struct Console {
    pub(crate) source: Source,
    pub(crate) dlq: DlqProcessor,
    pub(crate) options: Options,
    pub(crate) csrf: String,
    pub(crate) snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    pub(crate) stalls: Mutex<lag::StallTracker>,
    pub(crate) lags: RwLock<Vec<lag::ConsumerLag>>,
    /// This process's own entries (shown when the stored trail cannot be read).
    pub(crate) audit: Mutex<Vec<AuditEntry>>,
    pub(crate) last_error: Mutex<Option<String>>,
    /// The SDK configuration (rebuilds read and write the tables through it).
    pub(crate) sdk: aws_config::SdkConfig,
    /// Rebuilds started from this console, by stored view.
    pub(crate) rebuilds:
        Mutex<std::collections::BTreeMap<String, Arc<Mutex<pages::projections::Job>>>>,
    /// When a page last asked for the snapshot: with nobody looking, refreshes pause.
    last_view: Mutex<Instant>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("tables", self.source.tables())
            .field("options", &self.options)
            .finish()
    }
}

impl Console {
    /// A console over `tables` through `sdk`, writing through `dlq`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        tables: Tables,
        dlq: DlqProcessor,
        options: Options,
    ) -> Arc<Self> {
        let (publish, snapshot) = watch::channel(None);
        Arc::new(Self {
            source: Source::new(sdk, tables),
            dlq,
            stalls: Mutex::new(lag::StallTracker::new(options.stall)),
            options,
            // A per-process secret in every form, checked on every POST: another site's
            // page cannot forge a write (it cannot read the token).
            csrf: format!("{:032x}", rand::random::<u128>()),
            snapshot,
            publish,
            lags: RwLock::new(Vec::new()),
            audit: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            sdk: sdk.clone(),
            rebuilds: Mutex::new(std::collections::BTreeMap::new()),
            last_view: Mutex::new(Instant::now()),
        })
    }

    /// Takes a snapshot now and publishes it (with the consumers' lag and stall flags).
    pub async fn refresh(&self) {
        match self.source.snapshot().await {
            Ok(snap) => {
                let mut lags = lag::compute(&snap);
                lock(&self.stalls).observe(&mut lags, Instant::now());
                *self.lags.write().unwrap_or_else(|p| p.into_inner()) = lags;
                *lock(&self.last_error) = None;
                self.publish.send_replace(Some(Arc::new(snap)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "console: snapshot failed");
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
    }

    /// The latest snapshot, waiting for the first one.
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        *lock(&self.last_view) = Instant::now();
        let mut rx = self.snapshot.clone();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            if rx.changed().await.is_err() {
                return Arc::new(Snapshot::default());
            }
        }
    }

    /// The latest snapshot, without waiting: `None` while the first is still being read.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        *lock(&self.last_view) = Instant::now();
        self.snapshot.borrow().clone()
    }

    /// Scan pages the snapshot being taken has read so far.
    pub fn pages_read(&self) -> u32 {
        self.source.pages_read()
    }

    /// The consumers' lag as of the latest snapshot.
    pub fn lags(&self) -> Vec<lag::ConsumerLag> {
        self.lags.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The stack's audit trail, newest first ([`audit`]); when the table cannot be read,
    /// this process's own entries, with the reason.
    pub async fn audit(&self) -> (Vec<AuditEntry>, Option<audit::AuditError>) {
        let table = &self.source.tables().read_models;
        match audit::list(self.source.client(), table).await {
            Ok(entries) => (entries, None),
            Err(e) => {
                let own = lock(&self.audit).iter().rev().cloned().collect();
                (own, Some(e))
            }
        }
    }

    /// Records an operator's action in the stack's audit trail (and the log).
    pub(crate) async fn record(&self, action: &str, letter: &str, outcome: String) {
        let entry = AuditEntry {
            at: Utc::now(),
            operator: self.options.operator.clone(),
            action: action.to_owned(),
            letter: letter.to_owned(),
            outcome,
        };
        // The audit line also goes to the log: it outlives the process.
        tracing::info!(
            operator = %entry.operator, action, letter, outcome = %entry.outcome,
            "console audit"
        );
        println!(
            "console audit: {} {} {} {}: {}",
            entry.at.to_rfc3339(),
            entry.operator,
            action,
            letter,
            entry.outcome
        );
        let table = &self.source.tables().read_models;
        if let Err(e) = audit::put(self.source.client(), table, &entry).await {
            // The action happened: losing its record must not hide it. The log line above
            // and this process's memory keep it.
            tracing::error!(error = %e, action, letter, "audit entry not stored");
        }
        lock(&self.audit).push(entry);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// With no page viewed for this long, the background refreshes pause.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);

/// A console being served.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The console.
    pub console: Arc<Console>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and refreshing.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// How long the refresher waits after a snapshot that took `took`: at least `refresh`, and
/// four times as long as the snapshot took, so a large stack's scans keep at most a fifth
/// of the time (and of the tables' read capacity) busy, however long they get.
pub fn pause(refresh: Duration, took: Option<Duration>) -> Duration {
    refresh.max(took.unwrap_or_default() * 4)
}

/// Serves `console` on `listen` and refreshes its snapshot in the background.
pub async fn start(console: Arc<Console>, listen: SocketAddr) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let refresher = {
        let console = console.clone();
        tokio::spawn(async move {
            loop {
                // Every refresh scans the tables: with no page viewed for a while, none is
                // made (an idle console costs no read capacity).
                if lock(&console.last_view).elapsed() < IDLE_AFTER
                    || console.snapshot.borrow().is_none()
                {
                    console.refresh().await;
                }
                // Not `latest()`: that counts as a page view.
                let took = console.snapshot.borrow().as_ref().map(|s| s.took);
                tokio::time::sleep(pause(console.options.refresh, took)).await;
            }
        })
    };
    let server = {
        let console = console.clone();
        tokio::spawn(async move {
            if let Err(e) = web::serve(listener, console).await {
                tracing::error!(error = %e, "console: serving stopped");
            }
        })
    };
    Ok(Running {
        addr,
        console,
        tasks: vec![refresher, server],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_snapshot_spaces_the_next_one_out() {
        let two = Duration::from_secs(2);
        assert_eq!(pause(two, None), two);
        assert_eq!(pause(two, Some(Duration::from_millis(300))), two);
        assert_eq!(
            pause(two, Some(Duration::from_secs(20))),
            Duration::from_secs(80)
        );
    }
}
