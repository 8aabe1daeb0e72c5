//! The audit trail: every write an operator makes through the console (redrive, discard,
//! rebuild, promote, retire, abandon), who made it and what came of it, kept in the
//! read-models table so it outlives the console process and every console over the stack
//! shows the same trail.
//!
//! Items `pk = "_audit"`, `sk = "{RFC 3339 time, ns}#{8 random hex}"` (time order; the suffix
//! keeps two entries of one instant apart), attributes `operator`, `action`, `subject`,
//! `outcome`. `_`-prefixed partitions are reserved (no view document lives there) and the
//! console's snapshot skips them. Operators' writes are rare, so one partition is enough;
//! entries never expire (an audit trail is kept). Read newest first, one `Query` of a page.

use crate::AuditEntry;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashMap;

/// The trail's partition.
pub const PK: &str = "_audit";

/// Entries a page shows.
pub const PAGE: i32 = 100;

/// DynamoDB refused or failed a request of the trail (the SDK's error with its causes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuditError(pub String);

/// Stores `entry` in `table`.
pub async fn put(client: &Client, table: &str, entry: &AuditEntry) -> Result<(), AuditError> {
    let sk = format!(
        "{}#{:08x}",
        entry.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        rand::random::<u32>()
    );
    let s = |v: &str| AttributeValue::S(v.to_owned());
    client
        .put_item()
        .table_name(table)
        .item("pk", s(PK))
        .item("sk", s(&sk))
        .item("operator", s(&entry.operator))
        .item("action", s(&entry.action))
        .item("subject", s(&entry.letter))
        .item("outcome", s(&entry.outcome))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AuditError(eventfold_aws::diagnostic::cause_chain(&e)))
}

/// The newest [`PAGE`] entries of `table`, newest first.
pub async fn list(client: &Client, table: &str) -> Result<Vec<AuditEntry>, AuditError> {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(PK.to_owned()))
        .scan_index_forward(false)
        .limit(PAGE)
        .send()
        .await
        .map_err(|e| AuditError(eventfold_aws::diagnostic::cause_chain(&e)))?;
    Ok(out.items().iter().filter_map(decode).collect())
}

fn decode(item: &HashMap<String, AttributeValue>) -> Option<AuditEntry> {
    let s = |k: &str| match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let sk = s("sk")?;
    let at = DateTime::parse_from_rfc3339(sk.split('#').next()?).ok()?;
    Some(AuditEntry {
        at: at.with_timezone(&Utc),
        operator: s("operator")?,
        action: s("action")?,
        letter: s("subject")?,
        outcome: s("outcome")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_decodes_back_to_its_entry() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T18:00:00.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let item = HashMap::from([
            ("pk".to_owned(), s(PK)),
            (
                "sk".to_owned(),
                s("2026-12-07T18:00:00.123456789Z#0000beef"),
            ),
            ("operator".to_owned(), s("arn:aws:iam::1:user/ops")),
            ("action".to_owned(), s("promote")),
            ("subject".to_owned(), s("order-summary v2")),
            ("outcome".to_owned(), s("v2 live")),
        ]);
        let entry = decode(&item).expect("decodes");
        assert_eq!(entry.at, at);
        assert_eq!(entry.action, "promote");
        assert_eq!(entry.letter, "order-summary v2");
        let mut broken = item.clone();
        broken.remove("outcome");
        assert_eq!(decode(&broken), None);
    }
}
