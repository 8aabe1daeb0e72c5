//! Overview (per consumer: lag, oldest unapplied age, failures, dead letters, overdue
//! sagas, stalls).

use super::{ago, as_of, q, shell};
use crate::Console;
use crate::iterator_age::PublisherAge;
use crate::lag::ConsumerLag;
use maud::{Markup, html};

fn status(l: &ConsumerLag) -> Markup {
    html! {
        @if l.stalled {
            span.badge.bad { "STALLED" } " "
        }
        @if l.open_letters > 0 {
            span.badge.bad { "dead letters" } " "
        }
        @if l.overdue > 0 {
            span.badge.bad { "overdue" } " "
        }
        @if !l.stuck() {
            span.badge.good { "ok" }
        }
    }
}

/// The overview while the first snapshot is still being read (a large stack takes a while:
/// about 80 s for 10,000 orders locally): the page answers at once and says how far the
/// reading is; the script reloads it until the snapshot is there.
fn reading(console: &Console) -> Markup {
    let body = html! {
        p.banner role="status" aria-live="polite" data-reading {
            "Reading the tables: " (console.pages_read()) " pages so far. The overview shows once the first snapshot is complete."
        }
        p.muted { "This page reloads itself; without JavaScript, " a href="/" { "reload it" } "." }
    };
    shell(console, "Overview", "/", body)
}

/// The publisher's iterator age as the overview shows it.
fn iterator_age(age: PublisherAge) -> Markup {
    match age {
        PublisherAge::Unknown => {
            html! { span.muted title="STREAM_PUBLISHER_FUNCTION not set, or IteratorAge not readable" { "unknown" } }
        }
        PublisherAge::Idle => html! { span title="no batch sent in the last 2 minutes" { "idle" } },
        PublisherAge::Age { ms, .. } => {
            html! { span title="IteratorAge: age of the newest record sent, latest minute" { "iterator age " (format!("{:.1} s", ms / 1000.0)) } }
        }
    }
}

/// The overview page (at once: while the first snapshot is read, [`reading`]).
pub async fn page(console: &Console) -> Markup {
    let Some(snap) = console.latest() else {
        return reading(console);
    };
    let lags = console.lags();
    let stuck = lags.iter().filter(|l| l.stuck()).count();
    let stall_min = console.options.stall.as_secs_f64() / 60.0;
    let body = html! {
        @if stuck > 0 {
            p.banner.bad role="status" { (stuck) " consumer(s) need attention." }
        } @else {
            p.banner role="status" { "Every consumer is keeping up." }
        }
        (as_of(&snap))
        table {
            caption.muted { "Consumers (stalled: work waiting and no progress for " (format!("{stall_min:.1}")) " min)" }
            thead { tr {
                th scope="col" { "Consumer" }
                th scope="col" { "Status" }
                th scope="col" class="num" { "Commits behind" }
                th scope="col" class="num" { "Streams behind" }
                th scope="col" { "Oldest unapplied" }
                th scope="col" class="num" { "Failures (1 h)" }
                th scope="col" class="num" { "Open dead letters" }
                th scope="col" class="num" { "Overdue sagas" }
            } }
            tbody {
                @for l in &lags {
                    tr class=[l.stuck().then_some("stuck")] data-consumer=(l.name) {
                        th scope="row" { (l.name) }
                        td { (status(l)) }
                        td.num { @match l.behind { Some(b) => (b), None => span.muted title="Lambda does not expose a stream mapping's position, only its IteratorAge" { "n/a" } } }
                        td.num { (l.streams_behind) }
                        td { @match (l.iterator_age, l.oldest_unapplied) {
                            (Some(age), _) => (iterator_age(age)),
                            (None, Some(t)) => (ago(t, snap.taken_at)),
                            (None, None) => "—",
                        } }
                        td.num { (l.failures_last_hour) }
                        td.num {
                            @if l.open_letters > 0 {
                                a href={ "/dead-letters?status=open&consumer=" (q(l.dlq_consumer)) } { (l.open_letters) }
                            } @else { "0" }
                        }
                        td.num {
                            @if l.overdue > 0 { a href="/sagas" { (l.overdue) } } @else { (l.overdue) }
                        }
                    }
                }
            }
        }
        p.muted {
            "Lag: commits of the events table past each consumer's checkpoints. The stream publisher's position in the DynamoDB stream is not readable: its lag is the IteratorAge its event source mapping reports (the age of the newest record sent to it, latest minute)."
        }
    };
    shell(console, "Overview", "/", body)
}
