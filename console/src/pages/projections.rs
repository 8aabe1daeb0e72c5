//! The projections page: every stored view with its live version, lag, document count and
//! last failure; with `--allow-writes`, a zero-downtime rebuild driven from here (start it,
//! watch its progress, promote the verified version, retire the old one, or abandon a
//! rebuild), through the same steps as `eventfold projections rebuild --promote`
//! ([`crate::rebuild::versions::Flow`]). Every action needs the page's CSRF token and is
//! recorded in the audit trail with the operator's identity.

use super::{ago, as_of, at, q, shell};
use crate::lag::Kind;
use crate::rebuild::versions::{Flow, Stage};
use crate::rebuild::{RebuildError, RebuildTarget};
use crate::web::{Params, Problem};
use crate::{Console, lock};
use eventfold_consumers::projection::{PointerError, ViewPointer, stored_name};
use maud::{Markup, html};
use std::sync::{Arc, Mutex};

/// A rebuild started from this console, as its page shows it.
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// The version being built (once registered).
    pub version: Option<u32>,
    /// What it is doing.
    pub stage: String,
    /// Streams replayed, of `total`.
    pub done: usize,
    /// Streams to replay.
    pub total: usize,
    /// Still running.
    pub running: bool,
    /// The verified version, ready to promote.
    pub ready: Option<u32>,
    /// How it ended (verified, differences, or the error).
    pub outcome: Option<String>,
}

/// What an operator may do to a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a rebuild into a new version.
    Rebuild,
    /// Make the verified version live.
    Promote,
    /// Retire the previous live version (after its grace period).
    Retire,
    /// Drop a building version.
    Abandon,
}

impl Action {
    /// The action of a form's path (`/projections/{action}`).
    pub fn from_path(path: &str) -> Option<Self> {
        match path.strip_prefix("/projections/")? {
            "rebuild" => Some(Self::Rebuild),
            "promote" => Some(Self::Promote),
            "retire" => Some(Self::Retire),
            "abandon" => Some(Self::Abandon),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rebuild => "rebuild",
            Self::Promote => "promote",
            Self::Retire => "retire",
            Self::Abandon => "abandon",
        }
    }
}

/// The stored views, with their kind and source category.
fn views() -> Vec<(&'static str, Kind)> {
    crate::lag::consumers()
        .into_iter()
        .filter_map(|(name, kind)| match kind {
            Kind::StreamView(_) | Kind::CounterView(_) => {
                shop::registry::stored_view(&name).map(|v| (v.name(), kind))
            }
            _ => None,
        })
        .collect()
}

fn versions(p: &ViewPointer) -> String {
    let mut parts = vec![format!("v{} live", p.live)];
    if let Some(b) = p.building {
        parts.push(format!("v{b} building"));
    }
    if let Some(r) = p.retiring {
        parts.push(format!("v{r} retiring"));
    }
    parts.join(", ")
}

fn job_of(console: &Console, view: &str) -> Option<Job> {
    let jobs = lock(&console.rebuilds);
    jobs.get(view).map(|j| lock(j).clone())
}

fn button(
    console: &Console,
    action: Action,
    view: &str,
    version: Option<u32>,
    text: String,
) -> Markup {
    html! {
        form.inline method="post" action=(format!("/projections/{}", action.name())) {
            input type="hidden" name="csrf" value=(console.csrf);
            input type="hidden" name="view" value=(view);
            @if let Some(v) = version { input type="hidden" name="version" value=(v); }
            button type="submit" { (text) }
        }
    }
}

/// The projections page.
pub async fn page(console: &Console, params: &Params) -> Markup {
    let snap = console.snapshot().await;
    let lags = console.lags();
    let writes = console.options.allow_writes;
    let body = html! {
        (as_of(&snap))
        @if let Some(done) = params.get("done") { p.banner role="status" { (done) } }
        table {
            thead { tr {
                th scope="col" { "View" }
                th scope="col" { "Kind" }
                th scope="col" { "Source" }
                th scope="col" { "Versions" }
                th scope="col" class="num" { "Commits behind" }
                th scope="col" class="num" { "Documents (live)" }
                th scope="col" { "Last failure" }
                th scope="col" { "Rebuild" }
            } }
            tbody {
                @for (view, kind) in views() {
                    @let (kind_name, category) = match kind { Kind::StreamView(c) => ("per stream", c), Kind::CounterView(c) => ("counters", c), _ => ("", "") };
                    @let pointer = snap.pointer(view);
                    @let lag = lags.iter().find(|l| l.name == view);
                    @let note = snap.notes.iter().filter(|n| n.consumer == "projector").max_by_key(|n| n.at);
                    @let job = job_of(console, view);
                    tr {
                        th scope="row" { (view) }
                        td { (kind_name) }
                        td { (category) }
                        td {
                            (versions(&pointer))
                            @for v in pointer.active().into_iter().filter(|v| *v != pointer.live) {
                                br; span.muted { "v" (v) ": " (snap.doc_counts.get(&stored_name(view, v)).copied().unwrap_or(0)) " documents" }
                            }
                            @if let Some(until) = pointer.retire_after.filter(|_| pointer.retiring.is_some()) {
                                br; span.muted { "retirable from " (at(until)) }
                            }
                        }
                        td.num { (lag.and_then(|l| l.behind).unwrap_or(0)) }
                        td.num { (snap.doc_counts.get(&snap.live_name(view)).copied().unwrap_or(0)) }
                        td { @match note { Some(n) => { (ago(n.at, snap.taken_at)) " ago: " (n.error) }, None => "—" } }
                        td {
                            @if let Some(j) = &job {
                                @if j.running {
                                    // The script polls /projections/progress and updates
                                    // these in place; the live region reads them out.
                                    div data-rebuild=(view) {
                                        label {
                                            span data-stage { (j.stage) } " "
                                            progress value=(j.done) max=(j.total.max(1)) { (j.done) "/" (j.total) }
                                        }
                                        " " span role="status" aria-live="polite" data-count { (count(j)) }
                                    }
                                } @else if let Some(o) = &j.outcome {
                                    span { (o) } br;
                                }
                            }
                            @if writes && !job.as_ref().is_some_and(|j| j.running) {
                                @match (pointer.building, pointer.retiring) {
                                    (None, None) => { (button(console, Action::Rebuild, view, None, format!("Rebuild {view}"))) }
                                    (Some(b), _) => {
                                        @if job.as_ref().and_then(|j| j.ready) == Some(b) {
                                            (button(console, Action::Promote, view, Some(b), format!("Promote v{b}")))
                                        }
                                        (button(console, Action::Abandon, view, Some(b), format!("Abandon v{b}")))
                                    }
                                    (None, Some(r)) => { (button(console, Action::Retire, view, Some(r), format!("Retire v{r}"))) }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted {
            "A rebuild builds a new version from the events table while the live one serves, verifies it against the live one, and the promote switches every query to it in one write; the old version stays current until it is retired ("
            (console.options.grace.as_secs()) " s after the promote at the earliest). The same from the CLI: "
            code { "eventfold projections rebuild VIEW --promote" } "."
            @if !writes { " Read-only: start the console with --allow-writes to rebuild from here." }
        }
    };
    shell(console, "Projections", "/projections", body)
}

/// A running rebuild's progress in words.
fn count(j: &Job) -> String {
    format!("{} of {} streams", j.done, j.total)
}

/// Every rebuild started from this console, as JSON for the page's script: by view, its
/// stage, streams done of total, whether it still runs, the version ready to promote and
/// how it ended.
pub fn progress(console: &Console) -> serde_json::Value {
    let jobs = lock(&console.rebuilds);
    let by_view = jobs
        .iter()
        .map(|(view, job)| {
            let j = lock(job);
            let entry = serde_json::json!({
                "stage": j.stage,
                "done": j.done,
                "total": j.total,
                "running": j.running,
                "ready": j.ready,
                "outcome": j.outcome,
                "text": count(&j),
            });
            (view.clone(), entry)
        })
        .collect();
    serde_json::Value::Object(by_view)
}

fn refused(e: RebuildError) -> Problem {
    match e {
        RebuildError::Pointer { source, .. } => Problem::new(
            409,
            "conflict",
            match source {
                PointerError::InGrace { .. } => format!("{source}: queries may still read it"),
                _ => source.to_string(),
            },
        ),
        RebuildError::Store {
            source: eventfold_consumers::projection::ReadModelError::Conflict { .. },
            ..
        } => Problem::new(
            409,
            "conflict",
            "another operator moved the pointer first: reload",
        ),
        e => Problem::new(
            502,
            "unavailable",
            eventfold_aws::diagnostic::cause_chain(&e),
        ),
    }
}

/// Runs `action` on the view the form names; where to go next.
pub async fn act(console: &Console, action: Action, form: &Params) -> Result<String, Problem> {
    if !console.options.allow_writes {
        return Err(Problem::new(
            403,
            "writes-disabled",
            "the console is read-only: start it with --allow-writes",
        ));
    }
    if form.get("csrf") != Some(console.csrf.as_str()) {
        return Err(Problem::new(
            403,
            "csrf",
            "the form's token is missing or stale: reload the page",
        ));
    }
    let view = form
        .get("view")
        .filter(|v| views().iter().any(|(name, _)| name == v))
        .ok_or_else(|| Problem::bad("name a stored view (view=...)"))?;
    let version = match action {
        Action::Rebuild => None,
        _ => Some(
            form.get("version")
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| *v >= 1)
                .ok_or_else(|| Problem::bad("name a version (version=2, ...)"))?,
        ),
    };
    let tables = console.source.tables();
    let target = RebuildTarget {
        sdk: console.sdk.clone(),
        events_table: tables.events.clone(),
        read_models_table: tables.read_models.clone(),
        keys: console.options.keys.clone(),
    };
    let flow = Flow::new(target, view, &console.options.operator)
        .map_err(|e| Problem::bad(e.to_string()))?;
    let v = version.unwrap_or_default();
    let outcome = match action {
        Action::Rebuild => {
            start(console, flow);
            Ok("started".to_owned())
        }
        Action::Promote => {
            let flip = flow.promote(v, console.options.grace).await;
            flip.map(|f| {
                format!(
                    "v{v} live (one pointer write, rev {}, {} ms)",
                    f.pointer.rev,
                    f.took.as_millis()
                )
            })
        }
        Action::Retire => flow
            .retire(v)
            .await
            .map(|n| format!("v{v} retired, {n} items deleted")),
        Action::Abandon => flow
            .abandon(v)
            .await
            .map(|n| format!("v{v} abandoned, {n} items deleted")),
    };
    let subject = match version {
        Some(v) => format!("{view} v{v}"),
        None => view.to_owned(),
    };
    match outcome {
        Ok(text) => {
            console.record(action.name(), &subject, text.clone()).await;
            if action != Action::Rebuild
                && let Some(job) = lock(&console.rebuilds).get(view)
            {
                let mut job = lock(job);
                job.ready = None;
                job.outcome = Some(text.clone());
            }
            console.refresh().await;
            Ok(format!(
                "/projections?done={}",
                q(&format!("{subject}: {text}"))
            ))
        }
        Err(e) => {
            let problem = refused(e);
            console
                .record(
                    action.name(),
                    &subject,
                    format!("refused: {}", problem.detail),
                )
                .await;
            Err(problem)
        }
    }
}

/// Starts `flow`'s build in the background; its progress goes to the view's [`Job`].
fn start(console: &Console, flow: Flow) {
    let job = Arc::new(Mutex::new(Job {
        stage: "registering".into(),
        running: true,
        ..Job::default()
    }));
    lock(&console.rebuilds).insert(flow.view().to_owned(), job.clone());
    tokio::spawn(async move {
        let built = flow
            .build(|stage| {
                let mut j = lock(&job);
                match stage {
                    Stage::Scanning { version } => {
                        j.version = Some(version);
                        j.stage = format!("v{version}: scanning the events table");
                    }
                    Stage::Replaying {
                        version,
                        done,
                        total,
                    } => {
                        j.stage = format!("v{version}: replaying streams");
                        (j.done, j.total) = (done, total);
                    }
                    Stage::Verifying { version } => {
                        j.stage = format!("v{version}: verifying against the live version");
                    }
                }
            })
            .await;
        let mut j = lock(&job);
        j.running = false;
        match built {
            Ok(b) if b.diffs.is_empty() => {
                j.ready = Some(b.version);
                j.outcome = Some(format!(
                    "v{} verified ({} streams, equal to v{}): ready to promote",
                    b.version, b.report.streams, b.live
                ));
            }
            Ok(b) => {
                j.outcome = Some(format!(
                    "v{} differs from v{} in {} document(s), first: {}",
                    b.version,
                    b.live,
                    b.diffs.len(),
                    b.diffs.first().map(String::as_str).unwrap_or_default()
                ));
            }
            Err(e) => {
                j.outcome = Some(format!(
                    "failed: {}",
                    eventfold_aws::diagnostic::cause_chain(&e)
                ))
            }
        }
        tracing::info!(view = flow.view(), outcome = ?j.outcome, "console: rebuild finished");
    });
}
