//! Sagas: instances by phase, waiting ones with their deadline (overdue first); one
//! instance's log (its stream) and the commands it sent (commits caused by its events).

use super::{ago, as_of, at, q, shell, stream_href};
use crate::Console;
use crate::source::{CommitRow, Snapshot};
use crate::web::{Params, Problem};
use chrono::{DateTime, Utc};
use eventfold::StreamId;
use maud::{Markup, html};
use std::collections::{BTreeMap, HashSet};

/// The saga's stream category.
const SAGA_CATEGORY: &str = "OrderFulfilment";
/// Instances listed at most.
const LIST_MAX: usize = 500;

/// One instance as listed.
struct Instance<'a> {
    stream: &'a str,
    phase: &'a str,
    version: u64,
    due_at: Option<DateTime<Utc>>,
}

fn instances(snap: &Snapshot) -> Vec<Instance<'_>> {
    let due: BTreeMap<&str, DateTime<Utc>> = snap
        .deadlines
        .iter()
        .filter_map(|d| d.due_at.map(|t| (d.stream_id.as_str(), t)))
        .collect();
    let mut out: Vec<Instance<'_>> = snap
        .streams
        .iter()
        .filter(|(s, _)| StreamId::parse(s).is_ok_and(|id| id.category() == SAGA_CATEGORY))
        .map(|(s, commits)| Instance {
            stream: s,
            phase: commits
                .last()
                .and_then(|c| c.events.last())
                .map_or("?", |e| e.event_type.as_str()),
            version: commits.last().map_or(0, CommitRow::last_version),
            due_at: due.get(s.as_str()).copied(),
        })
        .collect();
    // Waiting ones first, by deadline (so the overdue lead), then the rest by stream.
    out.sort_by_key(|i| (i.due_at.is_none(), i.due_at, i.stream));
    out
}

/// The saga list.
pub async fn list(console: &Console) -> Markup {
    let snap = console.snapshot().await;
    let all = instances(&snap);
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &all {
        *phases.entry(i.phase).or_default() += 1;
    }
    let now = snap.taken_at;
    let body = html! {
        (as_of(&snap))
        h2 { "By phase (last step)" }
        table {
            thead { tr { th scope="col" { "Phase" } th scope="col" class="num" { "Instances" } } }
            tbody { @for (p, n) in &phases { tr { th scope="row" { (p) } td.num { (n) } } } }
        }
        h2 { "Instances" }
        table {
            thead { tr {
                th scope="col" { "Saga" } th scope="col" { "Phase" } th scope="col" class="num" { "Version" }
                th scope="col" { "Deadline" }
            } }
            tbody {
                @for i in all.iter().take(LIST_MAX) {
                    @let overdue = i.due_at.is_some_and(|t| t < now);
                    tr class=[overdue.then_some("stuck")] {
                        th scope="row" { a href={ "/sagas/view?id=" (q(i.stream)) } { (i.stream) } }
                        td { (i.phase) }
                        td.num { (i.version) }
                        td {
                            @if let Some(t) = i.due_at {
                                (at(t)) " "
                                @if overdue { span.badge.bad { "overdue " (ago(t, now)) } }
                                @else { span.muted { "waiting" } }
                            } @else { "—" }
                        }
                    }
                }
            }
        }
    };
    shell(console, "Sagas", "/sagas", body)
}

/// One saga instance: its log and the commands it sent.
pub async fn view(console: &Console, params: &Params) -> Result<Markup, Problem> {
    let id = params
        .get("id")
        .ok_or_else(|| Problem::bad("give a saga stream id (?id=tenant/OrderFulfilment-id)"))?;
    let snap = console.snapshot().await;
    let log = snap
        .streams
        .get(id)
        .ok_or_else(|| Problem::not_found(format!("no saga stream {id}")))?;
    let ids: HashSet<&str> = log
        .iter()
        .flat_map(|c| c.events.iter().map(|e| e.event_id.as_str()))
        .collect();
    let mut sent: Vec<&CommitRow> = snap
        .commits()
        .filter(|c| c.stream_id != id && ids.contains(c.metadata.causation_id.as_str()))
        .collect();
    sent.sort_by_key(|c| c.committed_at);
    let due = snap
        .deadlines
        .iter()
        .find(|d| d.stream_id == id)
        .and_then(|d| d.due_at);
    let body = html! {
        p {
            a href=(stream_href(id, None)) { "Open the stream (events, state at any version)" } " · "
            a href={ "/trace?q=" (q(&log[0].metadata.correlation_id)) } { "Trace" }
            @if let Some(t) = due { " · deadline " (at(t)) }
        }
        h2 { "Log" }
        table {
            thead { tr { th scope="col" class="num" { "Version" } th scope="col" { "Steps" } th scope="col" { "Committed" } th scope="col" { "Caused by" } } }
            tbody {
                @for c in log {
                    tr {
                        td.num { a href=(stream_href(id, Some(c.last_version()))) { (c.version) } }
                        td { (c.events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (at(c.committed_at)) }
                        td { @match snap.commit_of_event(&c.metadata.causation_id) {
                            Some(p) => a href=(stream_href(&p.stream_id, Some(p.last_version()))) { (p.stream_id) " v" (p.version) },
                            None => code { (c.metadata.causation_id) },
                        } }
                    }
                }
            }
        }
        h2 { "Commands it sent" }
        @if sent.is_empty() { p { "None recorded yet." } }
        table {
            thead { tr { th scope="col" { "Command" } th scope="col" { "Target" } th scope="col" { "Events" } th scope="col" { "Committed" } } }
            tbody {
                @for c in &sent {
                    tr {
                        td { code { (c.metadata.command_id) } }
                        td { a href=(stream_href(&c.stream_id, Some(c.last_version()))) { (c.stream_id) " v" (c.version) } }
                        td { (c.events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (at(c.committed_at)) }
                    }
                }
            }
        }
    };
    Ok(shell(console, &format!("Saga {id}"), "/sagas", body))
}
