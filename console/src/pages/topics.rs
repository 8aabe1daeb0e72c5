//! Topics and consumer groups: each topic's partitions with their head offsets (the heads of
//! its partition streams in the snapshot), each group's committed offset and lag per
//! partition. Two `Scan`s (topics and groups tables: small) when the page is opened.

use super::{as_of, shell, stream_href};
use crate::Console;
use crate::web::Problem;
use aws_sdk_dynamodb::types::AttributeValue;
use maud::{Markup, html};
use std::collections::{BTreeMap, HashMap};

type Item = HashMap<String, AttributeValue>;

async fn scan(console: &Console, table: &str) -> Result<Vec<Item>, Problem> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = console
            .source
            .client()
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                Problem::new(
                    502,
                    "store-unavailable",
                    eventfold_aws::diagnostic::cause_chain(&e),
                )
            })?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(items),
        }
    }
}

fn text(item: &Item, k: &str) -> String {
    match item.get(k) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    }
}

fn num(v: Option<&AttributeValue>) -> u64 {
    match v {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The topics page.
pub async fn page(console: &Console) -> Result<Markup, Problem> {
    let snap = console.snapshot().await;
    let tables = console.source.tables().clone();
    let topics = scan(console, &tables.topics).await?;
    let groups = scan(console, &tables.groups).await?;
    // (tenant, topic) -> partitions
    let mut known: BTreeMap<(String, String), u32> = BTreeMap::new();
    for t in &topics {
        known.insert(
            (text(t, "pk"), text(t, "sk")),
            u32::try_from(num(t.get("partitions"))).unwrap_or(0),
        );
    }
    let head = |tenant: &str, topic: &str, p: u32| -> u64 {
        snap.streams
            .get(&format!("{tenant}/Topic-{topic}.{p}"))
            .and_then(|c| c.last())
            .map_or(0, |c| c.last_version())
    };
    let body = html! {
        (as_of(&snap))
        @if known.is_empty() { p { "No topic yet." } }
        @for ((tenant, topic), partitions) in &known {
            section aria-labelledby={ "t-" (tenant) "-" (topic) } {
                h2 id={ "t-" (tenant) "-" (topic) } { (tenant) " / " (topic) }
                table {
                    caption.muted { "Partitions and head offsets" }
                    thead { tr { th scope="col" class="num" { "Partition" } th scope="col" class="num" { "Head offset" } } }
                    tbody {
                        @for p in 0..*partitions {
                            tr {
                                td.num { a href=(stream_href(&format!("{tenant}/Topic-{topic}.{p}"), None)) { (p) } }
                                td.num { (head(tenant, topic, p)) }
                            }
                        }
                    }
                }
                @for g in groups.iter().filter(|g| text(g, "pk") == format!("{tenant}/{topic}")) {
                    @let committed = match g.get("committed") { Some(AttributeValue::M(m)) => m.clone(), _ => HashMap::new() };
                    table {
                        caption { "Group " strong { (text(g, "sk")) } }
                        thead { tr { th scope="col" class="num" { "Partition" } th scope="col" class="num" { "Committed" } th scope="col" class="num" { "Lag" } } }
                        tbody {
                            @for p in 0..*partitions {
                                @let c = num(committed.get(&p.to_string()));
                                @let lag = head(tenant, topic, p).saturating_sub(c);
                                tr class=[(lag > 0).then_some("lagging")] {
                                    td.num { (p) } td.num { (c) } td.num { (lag) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(shell(
        console,
        "Topics and consumer groups",
        "/topics",
        body,
    ))
}
