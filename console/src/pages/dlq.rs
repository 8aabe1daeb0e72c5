//! Dead letters: filter by consumer, tenant, event type, error text, time and status; body,
//! attributes and error; redrive or discard one or many (`--allow-writes` only), audited.

use super::{as_of, at, q, shell};
use crate::Console;
use crate::web::{Params, Problem};
use chrono::{DateTime, Duration, Utc};
use eventfold_consumers::deadletter::{DeadLetter, Status};
use maud::{Markup, html};
use std::collections::BTreeSet;

/// A bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send back to the consumer.
    Redrive,
    /// Give up, with a reason.
    Discard,
}

/// The filters of the list, from the query.
#[derive(Debug, Default)]
struct Filters<'a> {
    consumer: Option<&'a str>,
    tenant: Option<&'a str>,
    event_type: Option<&'a str>,
    error: Option<&'a str>,
    since_hours: Option<i64>,
    status: Option<Status>,
}

impl<'a> Filters<'a> {
    fn of(p: &'a Params) -> Self {
        Self {
            consumer: p.get("consumer"),
            tenant: p.get("tenant"),
            event_type: p.get("type"),
            error: p.get("error"),
            since_hours: p.get("since_hours").and_then(|h| h.parse().ok()),
            // Open letters unless another status (or `any`) is asked for.
            status: match p.get("status") {
                Some("any") => None,
                Some(s) => Status::parse(s),
                None => Some(Status::Open),
            },
        }
    }

    fn matches(&self, l: &DeadLetter, now: DateTime<Utc>) -> bool {
        self.consumer.is_none_or(|c| l.consumer == c)
            && self.tenant.is_none_or(|t| l.tenant == t)
            && self
                .event_type
                .is_none_or(|t| l.event_type.as_deref() == Some(t))
            && self.error.is_none_or(|e| {
                l.last_error
                    .as_deref()
                    .is_some_and(|x| x.to_lowercase().contains(&e.to_lowercase()))
            })
            && self
                .since_hours
                .is_none_or(|h| l.last_failure_at >= now - Duration::hours(h))
            && self.status.is_none_or(|s| l.status == s)
    }
}

fn select(name: &str, label: &str, values: &BTreeSet<&str>, current: Option<&str>) -> Markup {
    html! {
        label { (label)
            select name=(name) {
                option value="" { "all" }
                @for v in values { option value=(v) selected[current == Some(*v)] { (v) } }
            }
        }
    }
}

/// The list, with the bulk actions when writes are allowed.
pub async fn list(console: &Console, params: &Params) -> Markup {
    let snap = console.snapshot().await;
    let f = Filters::of(params);
    let letters: Vec<&DeadLetter> = snap
        .letters
        .iter()
        .filter(|l| f.matches(l, snap.taken_at))
        .collect();
    let consumers: BTreeSet<&str> = snap.letters.iter().map(|l| l.consumer.as_str()).collect();
    let tenants: BTreeSet<&str> = snap.letters.iter().map(|l| l.tenant.as_str()).collect();
    let types: BTreeSet<&str> = snap
        .letters
        .iter()
        .filter_map(|l| l.event_type.as_deref())
        .collect();
    let writes = console.options.allow_writes;
    let status = params.get("status").unwrap_or("open");
    let (audit, audit_error) = console.audit().await;
    let body = html! {
        @if let Some(done) = params.get("done") { p.banner role="status" { (done) } }
        (as_of(&snap))
        form.filters method="get" action="/dead-letters" aria-label="Filters" {
            (select("consumer", "Consumer", &consumers, f.consumer))
            (select("tenant", "Tenant", &tenants, f.tenant))
            (select("type", "Event type", &types, f.event_type))
            label { "Error contains" input type="text" name="error" value=[f.error]; }
            label { "Failed in the last (hours)" input type="number" min="1" name="since_hours" value=[f.since_hours]; }
            label { "Status"
                select name="status" {
                    @for s in ["open", "redriven", "discarded", "any"] { option value=(s) selected[status == s] { (s) } }
                }
            }
            button type="submit" { "Filter" }
        }
        p role="status" { (letters.len()) " dead letter(s)." }
        form method="post" action="/dead-letters/redrive" {
            input type="hidden" name="csrf" value=(console.csrf);
            table {
                thead { tr {
                    @if writes { th scope="col" { input type="checkbox" id="select-all" aria-label="Select all"; } }
                    th scope="col" { "Letter" } th scope="col" { "Status" } th scope="col" { "Consumer" }
                    th scope="col" { "Tenant" } th scope="col" { "Stream" } th scope="col" { "Event type" }
                    th scope="col" { "Last failure" } th scope="col" { "Error" }
                } }
                tbody {
                    @for l in &letters {
                        tr data-letter=(l.id) {
                            @if writes { td { input type="checkbox" name="id" value=(l.id) aria-label={ "Select " (l.id) }; } }
                            th scope="row" { a href={ "/dead-letters/view?id=" (q(&l.id)) } { code { (l.id) } } }
                            td { (l.status.as_str()) }
                            td { (l.consumer) }
                            td { (l.tenant) }
                            td { (l.stream_id.as_deref().unwrap_or("—")) }
                            td { (l.event_type.as_deref().unwrap_or("—")) }
                            td { (at(l.last_failure_at)) }
                            td { (l.last_error.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
            @if writes {
                fieldset {
                    legend { "With the selected letters" }
                    button type="submit" { "Redrive selected" } " "
                    label { "Reason (to discard) " input type="text" name="reason"; } " "
                    button type="submit" formaction="/dead-letters/discard" { "Discard selected" }
                }
            } @else {
                p.muted { "Read-only: start the console with --allow-writes to redrive or discard." }
            }
        }
        h2 { "Audit trail" }
        @if let Some(e) = &audit_error { p.banner.bad role="status" { "The stored audit trail could not be read (" (e) "); this console's own actions:" } }
        @if audit.is_empty() { p.muted { "No operator action recorded yet. Every letter also keeps who last changed it and why." } }
        @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Letter" } th scope="col" { "Outcome" } } }
                tbody { @for a in &audit { tr { td { (at(a.at)) } td { (a.operator) } td { (a.action) } td { code { (a.letter) } } td { (a.outcome) } } } }
            }
        }
    };
    shell(console, "Dead letters", "/dead-letters", body)
}

/// One letter in full.
pub async fn view(console: &Console, params: &Params) -> Result<Markup, Problem> {
    let id = params
        .get("id")
        .ok_or_else(|| Problem::bad("give a letter id (?id=...)"))?;
    let letter = console
        .dlq
        .get(None, id)
        .await
        .map_err(|e| Problem::not_found(e.to_string()))?;
    let body = html! {
        table {
            tbody {
                tr { th scope="row" { "Status" } td { (letter.status.as_str()) } }
                tr { th scope="row" { "Consumer" } td { (letter.consumer) " (" (letter.source_queue) ")" } }
                tr { th scope="row" { "Tenant" } td { (letter.tenant) } }
                tr { th scope="row" { "Stream" } td { @if let Some(s) = &letter.stream_id { a href=(super::stream_href(s, None)) { (s) } } } }
                tr { th scope="row" { "Versions" } td { (letter.first_version.map(|v| v.to_string()).unwrap_or_default()) "–" (letter.last_version.map(|v| v.to_string()).unwrap_or_default()) } }
                tr { th scope="row" { "Deliveries" } td { (letter.receive_count) } }
                tr { th scope="row" { "Failed" } td { (at(letter.first_failure_at)) " … " (at(letter.last_failure_at)) } }
                tr { th scope="row" { "Blocked behind" } td { (letter.blocked_behind.as_deref().unwrap_or("—")) } }
                tr { th scope="row" { "Changed by" } td { (letter.changed_by.as_deref().unwrap_or("—")) @if let Some(t) = letter.changed_at { " at " (at(t)) } @if let Some(r) = &letter.reason { ": " (r) } } }
            }
        }
        h2 { "Error" }
        pre { (letter.last_error.as_deref().unwrap_or("—")) }
        h2 { "Body" }
        pre { (letter.body) }
        h2 { "Attributes" }
        table { tbody { @for (k, v) in &letter.attributes { tr { th scope="row" { (k) } td { code { (v) } } } } } }
    };
    Ok(shell(
        console,
        &format!("Dead letter {id}"),
        "/dead-letters",
        body,
    ))
}

/// Runs `action` on the letters the form selects; where to go next.
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
    let ids: Vec<&str> = form.all("id");
    if ids.is_empty() {
        return Err(Problem::bad("select at least one dead letter"));
    }
    if ids
        .iter()
        .any(|id| id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Problem::bad("a dead-letter id is 1-64 hexadecimal digits"));
    }
    let reason = form.get("reason");
    if action == Action::Discard && reason.is_none() {
        return Err(Problem::bad("say why the letters are discarded (reason)"));
    }
    let operator = console.options.operator.clone();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for id in ids {
        if covered.contains(id) {
            continue;
        }
        let outcome = match action {
            Action::Redrive => console.dlq.redrive(None, id, &operator).await.map(|r| {
                covered.extend(r.redriven.iter().cloned());
                format!("sent {}; redriven {}", r.sent, r.redriven.join(" "))
            }),
            Action::Discard => console
                .dlq
                .discard(None, id, &operator, reason.unwrap_or_default())
                .await
                .map(|_| format!("discarded: {}", reason.unwrap_or_default())),
        };
        let name = match action {
            Action::Redrive => "redrive",
            Action::Discard => "discard",
        };
        match outcome {
            Ok(text) => {
                ok += 1;
                console.record(name, id, text).await;
            }
            Err(e) => {
                failed += 1;
                console.record(name, id, format!("failed: {e}")).await;
            }
        }
    }
    // The next page shows the change, not the snapshot from before it.
    console.refresh().await;
    let done = format!("{ok} done, {failed} failed");
    Ok(format!("/dead-letters?status=any&done={}", q(&done)))
}
