//! Streams: browse by tenant and category; one stream's commits and events, its snapshots,
//! and its state at any version (time travel).

use super::{as_of, at, q, shell, stream_href};
use crate::Console;
use crate::web::{Params, Problem};
use eventfold::{EventStore, StreamId};
use eventfold_aws::DynamoEventStore;
use maud::{Markup, html};
use std::collections::BTreeSet;

/// Streams shown in one list at most.
const LIST_MAX: usize = 500;

/// The stream list, filtered by `tenant` and `category`.
pub async fn list(console: &Console, params: &Params) -> Markup {
    let snap = console.snapshot().await;
    let (tenant, category) = (params.get("tenant"), params.get("category"));
    let parsed: Vec<(StreamId, &Vec<crate::source::CommitRow>)> = snap
        .streams
        .iter()
        .filter_map(|(s, c)| StreamId::parse(s).ok().map(|id| (id, c)))
        .collect();
    let tenants: BTreeSet<&str> = parsed.iter().map(|(s, _)| s.tenant()).collect();
    let categories: BTreeSet<&str> = parsed.iter().map(|(s, _)| s.category()).collect();
    let shown: Vec<_> = parsed
        .iter()
        .filter(|(s, _)| tenant.is_none_or(|t| s.tenant() == t))
        .filter(|(s, _)| category.is_none_or(|c| s.category() == c))
        .collect();
    let body = html! {
        (as_of(&snap))
        form.filters method="get" action="/streams" {
            label { "Tenant"
                select name="tenant" {
                    option value="" { "all" }
                    @for t in &tenants { option value=(t) selected[tenant == Some(*t)] { (t) } }
                }
            }
            label { "Category"
                select name="category" {
                    option value="" { "all" }
                    @for c in &categories { option value=(c) selected[category == Some(*c)] { (c) } }
                }
            }
            button type="submit" { "Show" }
        }
        p { (shown.len()) " stream(s)" @if shown.len() > LIST_MAX { ", the first " (LIST_MAX) " shown" } "." }
        table {
            thead { tr {
                th scope="col" { "Stream" } th scope="col" class="num" { "Version" }
                th scope="col" class="num" { "Commits" } th scope="col" { "Last commit" }
                th scope="col" { "Snapshots at" }
            } }
            tbody {
                @for (id, commits) in shown.iter().take(LIST_MAX) {
                    @let head = commits.last().map_or(0, |c| c.last_version());
                    tr {
                        th scope="row" { a href=(stream_href(&id.to_string(), None)) { (id.to_string()) } }
                        td.num { (head) }
                        td.num { (commits.len()) }
                        td { @if let Some(c) = commits.last() { (at(c.committed_at)) } }
                        td { (commits.iter().filter_map(|c| c.snapshot).map(|v| v.to_string()).collect::<Vec<_>>().join(", ")) }
                    }
                }
            }
        }
    };
    shell(console, "Streams", "/streams", body)
}

/// One stream: `id`, state at `v` (default: its head).
pub async fn view(console: &Console, params: &Params) -> Result<Markup, Problem> {
    let id = params
        .get("id")
        .ok_or_else(|| Problem::bad("give a stream id (?id=tenant/Category-id)"))?;
    let stream = StreamId::parse(id).map_err(|e| Problem::bad(e.to_string()))?;
    let store = DynamoEventStore::new(
        console.source.client().clone(),
        &console.source.tables().events,
    );
    let events = store
        .load_range(id, 1, None, None)
        .await
        .map_err(|e| Problem::new(502, "store-unavailable", e.to_string()))?;
    let head = events.last().map_or(0, |e| e.version);
    if head == 0 {
        return Err(Problem::not_found(format!("stream {id} has no events")));
    }
    let version = match params.get("v") {
        None => head,
        Some(v) => match v.parse::<u64>() {
            Ok(v) if (1..=head).contains(&v) => v,
            _ => return Err(Problem::bad(format!("version must be 1..={head}"))),
        },
    };
    let snap = console.snapshot().await;
    let commits = snap.streams.get(id).cloned().unwrap_or_default();
    let state = crate::fold::state_at(stream.category(), &events, version);
    let body = html! {
        p {
            "Tenant " strong { (stream.tenant()) } ", category " strong { (stream.category()) }
            ", version " strong { (head) } " in " (commits.len()) " commit(s). "
            a href={ "/trace?q=" (q(&events[0].metadata.correlation_id)) } { "Trace its first request" }
        }
        h2 id="state" { "State at version " (version) }
        form.filters method="get" action="/streams/view" {
            input type="hidden" name="id" value=(id);
            label { "Version" input type="number" name="v" min="1" max=(head) value=(version); }
            button type="submit" { "Show state" }
        }
        @match &state {
            Ok(s) => pre data-testid="state" { (serde_json::to_string_pretty(s).unwrap_or_default()) },
            Err(e) => p.muted { "No state: " (e.to_string()) },
        }
        h2 { "Commits" }
        table {
            thead { tr {
                th scope="col" class="num" { "Version" } th scope="col" { "Events" }
                th scope="col" { "Committed" } th scope="col" { "Command" } th scope="col" { "Actor" }
                th scope="col" { "Snapshot" }
            } }
            tbody {
                @for c in &commits {
                    tr {
                        td.num { (c.version) @if c.last_version() > c.version { "–" (c.last_version()) } }
                        td { (c.events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (at(c.committed_at)) }
                        td { a href={ "/trace?q=" (q(&c.metadata.command_id)) } { code { (c.metadata.command_id) } } }
                        td { (c.metadata.actor) }
                        td { @if let Some(v) = c.snapshot { "state at v" (v) } @else { "—" } }
                    }
                }
            }
        }
        h2 { "Events" }
        table {
            thead { tr {
                th scope="col" class="num" { "Version" } th scope="col" { "Type" }
                th scope="col" class="num" { "Schema" } th scope="col" { "Occurred" }
                th scope="col" { "Metadata" } th scope="col" { "Data" }
            } }
            tbody {
                @for e in &events {
                    tr {
                        td.num { a href={ (stream_href(id, Some(e.version))) "#state" } aria-label={ "State at version " (e.version) } { (e.version) } }
                        td { (e.event_type) }
                        td.num { (e.schema_version) }
                        td { (at(e.occurred_at)) }
                        td {
                            "event " code { (e.event_id) } br;
                            "correlation " a href={ "/trace?q=" (q(&e.metadata.correlation_id)) } { code { (e.metadata.correlation_id) } } br;
                            "causation " code { (e.metadata.causation_id) } br;
                            "actor " (e.metadata.actor)
                        }
                        td { pre { (e.data.to_string()) } }
                    }
                }
            }
        }
    };
    Ok(shell(console, &format!("Stream {id}"), "/streams", body))
}
