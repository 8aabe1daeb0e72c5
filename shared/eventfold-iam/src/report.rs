//! What the recorded calls say about each role: per function, the actions exercised on each
//! resource; the granted actions no call exercised (candidate over-grants); and the mutation
//! check, per statement: replayed without it, how many recorded calls would be denied. A
//! statement no call needs is listed, with the reason when it is needed only in AWS (the
//! Lambda service writing CloudWatch Logs, X-Ray segments).

use crate::policy::{Statement, evaluate};
use crate::record::{Call, Labels};
use crate::role::Role;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// One statement's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementUse {
    /// `policy/sid`.
    pub name: String,
    /// Recorded call kinds it allows (alone).
    pub allows: usize,
    /// Recorded call kinds denied without it.
    pub needed_by: usize,
    /// When it allows calls that other statements allow too: those statements.
    pub also_allowed_by: Vec<String>,
    /// Its actions no recorded call exercised (with its resources).
    pub unexercised: Vec<String>,
    /// Why it is needed though no call here needs it, when known.
    pub aws_only: Option<&'static str>,
}

/// One function's part of the report.
#[derive(Debug, Clone, Default)]
pub struct FunctionReport {
    /// Resource label -> (action, allowed) -> calls.
    pub exercised: BTreeMap<String, BTreeMap<(String, bool), u64>>,
    /// Every statement of its role.
    pub statements: Vec<StatementUse>,
}

impl FunctionReport {
    /// Statements no recorded call exercises and no AWS-only reason explains.
    pub fn unexercised(&self) -> Vec<&StatementUse> {
        self.statements
            .iter()
            .filter(|s| s.allows == 0 && s.aws_only.is_none())
            .collect()
    }

    /// Statements whose every recorded call another statement allows too (removing one
    /// alone denies nothing).
    pub fn redundant(&self) -> Vec<&StatementUse> {
        self.statements
            .iter()
            .filter(|s| s.allows > 0 && s.needed_by == 0)
            .collect()
    }
}

/// The report, by function logical id.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per function.
    pub functions: BTreeMap<String, FunctionReport>,
}

/// Why an action is needed in AWS though no function code here calls it.
fn aws_only_reason(action: &str) -> Option<&'static str> {
    if action.starts_with("logs:") {
        Some("CloudWatch Logs: Lambda writes the function's logs with its role")
    } else if action.starts_with("xray:") {
        Some("X-Ray: Lambda sends the traces of an active-tracing function with its role")
    } else if action.eq_ignore_ascii_case("dynamodb:ListStreams") {
        Some(
            "Lambda's DynamoDB stream poller needs ListStreams (the Lambda developer guide lists it with DescribeStream, GetShardIterator and GetRecords); the local poller is given the stream ARN and never lists",
        )
    } else {
        None
    }
}

fn aws_only(document: &Value) -> Option<&'static str> {
    let actions = actions_of(document);
    let reasons: Vec<&'static str> = actions.iter().filter_map(|a| aws_only_reason(a)).collect();
    if actions.is_empty() || reasons.len() != actions.len() {
        return None;
    }
    reasons.first().copied()
}

fn actions_of(document: &Value) -> Vec<String> {
    match document.get("Action") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

impl Report {
    /// The report of `calls` against `roles`; `labels` maps recorded labels to this stack's
    /// ARNs.
    pub fn new(
        roles: &BTreeMap<String, Role>,
        labels: &Labels,
        calls: &BTreeMap<Call, u64>,
    ) -> Self {
        let mut functions = BTreeMap::new();
        for (id, role) in roles {
            let mine: Vec<(&Call, u64)> = calls
                .iter()
                .filter(|(c, _)| &c.function == id)
                .map(|(c, n)| (c, *n))
                .collect();
            let mut report = FunctionReport::default();
            for (call, n) in &mine {
                *report
                    .exercised
                    .entry(call.resource.clone())
                    .or_default()
                    .entry((call.action.clone(), call.allowed))
                    .or_default() += n;
            }
            let allowed: Vec<(String, String)> = mine
                .iter()
                .filter(|(c, _)| c.allowed)
                .map(|(c, _)| (c.action.clone(), labels.arn(&c.resource)))
                .collect();
            for (i, statement) in role.statements.iter().enumerate() {
                let others = role
                    .statements
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, s)| s);
                let others: Vec<&Statement> = others.collect();
                let mine: Vec<&(String, String)> = allowed
                    .iter()
                    .filter(|(a, r)| statement.decide(&role.principal, a, r).allowed())
                    .collect();
                let needed_by = mine
                    .iter()
                    .filter(|(a, r)| {
                        !evaluate(others.iter().copied(), &role.principal, a, r).allowed()
                    })
                    .count();
                let mut also_allowed_by: Vec<String> = others
                    .iter()
                    .filter(|o| {
                        mine.iter()
                            .any(|(a, r)| o.decide(&role.principal, a, r).allowed())
                    })
                    .map(|o| o.name())
                    .collect();
                also_allowed_by.dedup();
                let mut unexercised = Vec::new();
                for action in actions_of(&statement.document) {
                    let mut single = statement.document.clone();
                    single["Action"] = json!(action);
                    single["Effect"] = json!("Allow");
                    let doc = json!({"Version": "2012-10-17", "Statement": [single]});
                    let Ok(one) = Statement::parse_policy("probe", &doc) else {
                        continue;
                    };
                    if !allowed
                        .iter()
                        .any(|(a, r)| evaluate(&one, &role.principal, a, r).allowed())
                    {
                        let on = statement
                            .document
                            .get("Resource")
                            .map(|r| labels_of(labels, r))
                            .unwrap_or_else(|| "NotResource".into());
                        unexercised.push(format!("{action} on {on}"));
                    }
                }
                report.statements.push(StatementUse {
                    name: statement.name(),
                    allows: mine.len(),
                    needed_by,
                    also_allowed_by,
                    unexercised,
                    aws_only: aws_only(&statement.document),
                });
            }
            functions.insert(id.clone(), report);
        }
        Self { functions }
    }
}

fn labels_of(labels: &Labels, resource: &Value) -> String {
    match resource {
        Value::String(s) => labels.label(s),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| labels.label(s))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (function, r) in &self.functions {
            writeln!(f, "== {function}")?;
            writeln!(f, "  exercised:")?;
            if r.exercised.is_empty() {
                writeln!(f, "    (no call recorded)")?;
            }
            for (resource, actions) in &r.exercised {
                let mut line = String::new();
                for ((action, allowed), n) in actions {
                    let mark = if *allowed { "" } else { " DENIED" };
                    let _ = write!(line, " {action}{mark} x{n};");
                }
                writeln!(f, "    {resource}:{line}")?;
            }
            writeln!(
                f,
                "  statements (the mutation check: call kinds denied without it):"
            )?;
            for s in &r.statements {
                let verdict = match (s.allows, s.needed_by, s.aws_only) {
                    (0, _, Some(why)) => format!("needed only in AWS: {why}"),
                    (0, _, None) => "NOT EXERCISED by any recorded call".to_owned(),
                    (n, 0, _) => format!(
                        "REDUNDANT: its {n} call kinds are also allowed by {}",
                        s.also_allowed_by.join(", ")
                    ),
                    (_, n, _) => format!("needed by {n}"),
                };
                writeln!(f, "    {}: {verdict}", s.name)?;
                for u in &s.unexercised {
                    writeln!(f, "      granted, never exercised: {u}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mutation_check_finds_what_each_statement_is_needed_for() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Read", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Scan"], "Resource": "arn:aws:dynamodb:us-east-1:123456789012:table/t"},
            {"Sid": "Write", "Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "arn:aws:dynamodb:us-east-1:123456789012:table/t"},
            {"Sid": "Logs", "Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"},
        ]});
        let role = Role {
            function: "F".into(),
            role: "FRole".into(),
            principal: "arn:aws:sts::123456789012:assumed-role/FRole/F".into(),
            statements: Statement::parse_policy("p", &doc).expect("valid"),
        };
        let roles = BTreeMap::from([("F".to_owned(), role)]);
        let call = |action: &str, allowed| Call {
            function: "F".into(),
            action: action.into(),
            resource: "arn:aws:dynamodb:us-east-1:123456789012:table/t".into(),
            allowed,
        };
        let calls = BTreeMap::from([
            (call("dynamodb:GetItem", true), 3),
            (call("dynamodb:BatchGetItem", false), 1),
        ]);
        let report = Report::new(&roles, &Labels::default(), &calls);
        let f = &report.functions["F"];
        let by_name: BTreeMap<&str, &StatementUse> =
            f.statements.iter().map(|s| (s.name.as_str(), s)).collect();
        assert_eq!(by_name["p/Read"].needed_by, 1);
        assert_eq!(
            by_name["p/Read"].unexercised,
            ["dynamodb:Scan on arn:aws:dynamodb:us-east-1:123456789012:table/t"]
        );
        assert_eq!(by_name["p/Write"].needed_by, 0);
        assert!(by_name["p/Logs"].aws_only.is_some());
        let unexercised: Vec<&str> = f.unexercised().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(unexercised, ["p/Write"]);
        assert!(f.redundant().is_empty());
        let text = report.to_string();
        assert!(text.contains("dynamodb:BatchGetItem DENIED x1"), "{text}");
    }
}
