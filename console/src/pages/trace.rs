//! Trace: the causal tree of an order, correlation, command or event id, as a timeline, with
//! the views each commit reached.

use super::{as_of, at, shell, stream_href};
use crate::Console;
use crate::lag::{Kind, checkpoint, consumers};
use crate::web::Params;
use eventfold::StreamId;
use maud::{Markup, html};

/// The trace page for `?q=`.
pub async fn page(console: &Console, params: &Params) -> Markup {
    let snap = console.snapshot().await;
    let query = params.get("q").unwrap_or("");
    let nodes = crate::trace::tree(&snap, query);
    let t0 = nodes.iter().map(|n| n.commit.committed_at).min();
    let t1 = nodes.iter().map(|n| n.commit.committed_at).max();
    let span_ms = match (t0, t1) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(1),
        _ => 1,
    };
    let views: Vec<(String, Kind)> = consumers()
        .into_iter()
        .filter(|(_, k)| matches!(k, Kind::StreamView(_) | Kind::CounterView(_)))
        .collect();
    let body = html! {
        form.filters method="get" action="/trace" role="search" {
            label { "Order, correlation, command or event id"
                input type="search" name="q" value=(query) size="40";
            }
            button type="submit" { "Trace" }
        }
        (as_of(&snap))
        @if !query.is_empty() && nodes.is_empty() {
            p role="status" { "Nothing found for " code { (query) } "." }
        }
        @if let Some(t0) = t0 {
            p role="status" { (nodes.len()) " commit(s) over " (span_ms) " ms, from " (at(t0)) " UTC." }
            ol.timeline aria-label="Causal timeline" {
                @for n in &nodes {
                    @let c = n.commit;
                    @let offset = (c.committed_at - t0).num_milliseconds();
                    @let category = StreamId::parse(&c.stream_id).map(|s| s.category().to_owned()).unwrap_or_default();
                    li data-stream=(c.stream_id) {
                        div style={ "padding-left:" (n.depth * 18) "px" } {
                            a href=(stream_href(&c.stream_id, Some(c.last_version()))) { (c.stream_id) " v" (c.version) }
                            " " (c.events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>().join(", "))
                            br;
                            span.muted {
                                "+" (offset) " ms"
                                @if let Some(l) = n.latency_ms { " · " (l) " ms after its cause" }
                                " · " (c.metadata.actor)
                            }
                            div.views {
                                @for (name, kind) in views.iter().filter(|(_, k)| matches!(k, Kind::StreamView(cat) | Kind::CounterView(cat) if *cat == category)) {
                                    @let applied = checkpoint(&snap, name, *kind, &c.stream_id) >= c.last_version();
                                    span data-view=(name) data-applied=(applied) {
                                        "→ view " (name) ": "
                                        @if applied { span.badge.good { "applied" } } @else { span.badge.bad { "pending" } }
                                        " "
                                    }
                                }
                            }
                        }
                        div.track aria-hidden="true" {
                            div.bar style={ "left:" (format!("{:.2}", offset as f64 * 98.0 / span_ms as f64)) "%" } {}
                        }
                    }
                }
            }
        }
    };
    shell(console, "Trace", "/trace", body)
}
