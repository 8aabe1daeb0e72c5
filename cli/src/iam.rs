//! `eventfold iam report`: what the recorded calls of a run (each local stack writes its own
//! when `EVENTFOLD_IAM_RECORD` names a directory) exercised of each function's role: the
//! actions per resource, the granted actions nothing exercised (candidate over-grants), and
//! the mutation check (the statements no recorded call needs, unless needed only in AWS).

use anyhow::Result;
use eventfold_local::Template;
use eventfold_local::iam::record::read_calls;
use eventfold_local::iam::report::Report;
use eventfold_local::iam::{function_roles, labels};
use std::path::Path;

/// The stack name the report resolves the roles in (labels make the names irrelevant).
const REPORT_STACK: &str = "eventfold-local";

/// The report of the call files in `calls` against the roles of the template under `root`.
pub fn report(root: &Path, calls: &Path) -> Result<Report> {
    let mut template = Template::load(
        &root.join(eventfold_local::stack::TEMPLATE_PATH),
        REPORT_STACK,
        "us-east-1",
    )?;
    // Stream ARNs are the emulator's; any one stands for the table's stream here.
    for table in template.tables() {
        if table.stream_view_type.is_some()
            && let Some(arn) = template.arn(&table.logical_id)
        {
            template.set_runtime(
                &table.logical_id,
                "StreamArn",
                format!("{arn}/stream/local"),
            );
        }
    }
    let roles = function_roles(root, &template)?;
    let calls = read_calls(calls)?;
    Ok(Report::new(&roles, &labels(&template), &calls))
}

/// Where the granted actions no test exercises are listed, each with why it is granted.
pub const UNEXERCISED_PATH: &str = "infra/iam-unexercised.txt";

/// One entry of [`UNEXERCISED_PATH`]: a granted action (or, with `*`, a whole statement) of
/// a function's role that no recorded call exercises, and why the role keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Function logical id.
    pub function: String,
    /// The statement's `Sid`.
    pub sid: String,
    /// The action, or `*` for the whole statement.
    pub action: String,
    /// Written `action?`: a path the tests reach only sometimes (a lost race), so the
    /// entry is not stale while the action is exercised, only once it is no longer granted.
    pub sometimes: bool,
    /// Why it is granted though nothing here exercises it.
    pub reason: String,
}

/// Reads the entries of `text`: one per line, `Function/Sid action: reason` (`action?` for
/// a path the tests reach only sometimes); blank lines and `#` comments are skipped. A line
/// without a reason is an error.
pub fn parse_known(text: &str) -> Result<Vec<Known>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{UNEXERCISED_PATH}:{}: want `Function/Sid action: reason`, got `{line}`",
                n + 1
            )
        };
        let (head, reason) = line.split_once(": ").ok_or_else(bad)?;
        let (name, action) = head.split_once(' ').ok_or_else(bad)?;
        let (function, sid) = name.split_once('/').ok_or_else(bad)?;
        let reason = reason.trim();
        if reason.is_empty() || action.trim().is_empty() || function.is_empty() || sid.is_empty() {
            return Err(bad());
        }
        let action = action.trim();
        let (action, sometimes) = match action.strip_suffix('?') {
            Some(a) => (a, true),
            None => (action, false),
        };
        out.push(Known {
            function: function.to_owned(),
            sid: sid.to_owned(),
            action: action.to_owned(),
            sometimes,
            reason: reason.to_owned(),
        });
    }
    Ok(out)
}

/// The entries of [`UNEXERCISED_PATH`] under `root`.
pub fn read_known(root: &Path) -> Result<Vec<Known>> {
    let path = root.join(UNEXERCISED_PATH);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    parse_known(&text)
}

/// What `--check` refuses: denied calls on the stack's resources; statements that allow no
/// recorded call; granted actions no recorded call exercises, unless an entry of `known`
/// says why (statements needed only in AWS, such as Logs and X-Ray, explain themselves);
/// and entries of `known` that no longer match (exercised now, or no longer granted), so
/// the list cannot go stale. Empty when the roles fit the calls. (A redundant statement,
/// whose calls another statement allows too, is reported, not refused.)
pub fn problems(report: &Report, known: &[Known]) -> Vec<String> {
    let mut used = vec![false; known.len()];
    let mut explained = |function: &str, statement: &str, action: &str| {
        let sid = statement.rsplit('/').next().unwrap_or(statement);
        let hit = known
            .iter()
            .position(|k| k.function == function && k.sid == sid && k.action == action);
        if let Some(i) = hit {
            used[i] = true;
            println!(
                "known unexercised: {function}/{sid} {action}: {}",
                known[i].reason
            );
        }
        hit.is_some()
    };
    let mut out = Vec::new();
    for (function, r) in &report.functions {
        for (resource, actions) in &r.exercised {
            for ((action, allowed), n) in actions {
                // A resource outside the stack (a sample event's foreign ARN) is one no role
                // of the template can be missing.
                if !allowed && !resource.starts_with("arn:") {
                    out.push(format!(
                        "{function}: {action} on {resource} denied {n} times"
                    ));
                }
            }
        }
        for s in &r.statements {
            if s.aws_only.is_some() {
                continue;
            }
            if s.allows == 0 {
                if !explained(function, &s.name, "*") {
                    out.push(format!(
                        "{function}: {} allows no recorded call: remove it, or say why in {UNEXERCISED_PATH}",
                        s.name
                    ));
                }
                continue;
            }
            for u in &s.unexercised {
                let action = u.split_once(" on ").map_or(u.as_str(), |(a, _)| a);
                if !explained(function, &s.name, action) {
                    out.push(format!(
                        "{function}: {}: {u} is granted and never exercised: narrow the role, or say why in {UNEXERCISED_PATH}",
                        s.name
                    ));
                }
            }
        }
    }
    for (k, used) in known.iter().zip(used) {
        if !used && (!k.sometimes || !exercised_by(report, k)) {
            out.push(format!(
                "{UNEXERCISED_PATH}: `{}/{} {}` matches no unexercised grant any more (exercised now, or no longer granted): remove the entry",
                k.function, k.sid, k.action
            ));
        }
    }
    out
}

/// Whether a recorded call of `k`'s function was allowed `k`'s action and its statement
/// allowed some recorded call: the entry's grant still stands, and was exercised this time.
fn exercised_by(report: &Report, k: &Known) -> bool {
    report.functions.get(&k.function).is_some_and(|r| {
        let statement = r
            .statements
            .iter()
            .any(|s| s.allows > 0 && s.name.rsplit('/').next() == Some(k.sid.as_str()));
        let called = r
            .exercised
            .values()
            .any(|calls| calls.keys().any(|(a, allowed)| *allowed && *a == k.action));
        statement && called
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_local::iam::report::{FunctionReport, StatementUse};
    use std::collections::BTreeMap;

    fn statement(name: &str, allows: usize, unexercised: &[&str]) -> StatementUse {
        StatementUse {
            name: name.into(),
            allows,
            needed_by: allows,
            also_allowed_by: Vec::new(),
            unexercised: unexercised.iter().map(|s| (*s).to_owned()).collect(),
            aws_only: None,
        }
    }

    fn report(statements: Vec<StatementUse>) -> Report {
        let f = FunctionReport {
            exercised: BTreeMap::new(),
            statements,
        };
        Report {
            functions: BTreeMap::from([("F".to_owned(), f)]),
        }
    }

    #[test]
    fn entries_read_as_function_sid_action_and_a_reason() {
        let known =
            parse_known("# why\n\nF/Read dynamodb:GetItem: the fallback read\nF/Old *: AWS only\n")
                .expect("parses");
        assert_eq!(known.len(), 2);
        assert_eq!(
            (
                known[0].function.as_str(),
                known[0].sid.as_str(),
                known[0].action.as_str()
            ),
            ("F", "Read", "dynamodb:GetItem")
        );
        assert_eq!(known[1].reason, "AWS only");
        for bad in [
            "F/Read dynamodb:GetItem",
            "F/Read dynamodb:GetItem: ",
            "Read dynamodb:GetItem: x",
            "F/Read: x",
        ] {
            assert!(parse_known(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unexercised_grant_needs_a_reason_and_a_reason_must_not_go_stale() {
        let r = report(vec![
            statement(
                "p/Read",
                2,
                &["dynamodb:GetItem on Table", "dynamodb:Scan on Table"],
            ),
            statement("p/Unused", 0, &["sqs:SendMessage on Queue"]),
        ]);
        let problems = problems(&r, &[]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("dynamodb:Scan on Table is granted and never exercised"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("p/Unused allows no recorded call"))
        );

        let known = parse_known(
            "F/Read dynamodb:GetItem: fallback\nF/Read dynamodb:Scan: operator\nF/Unused *: AWS only\n",
        )
        .expect("parses");
        assert!(super::problems(&r, &known).is_empty());

        // A race path the tests reach only sometimes: exercised this time, still granted.
        let mut raced = r.clone();
        if let Some(f) = raced.functions.get_mut("F") {
            f.exercised.insert(
                "Table".into(),
                BTreeMap::from([(("dynamodb:PutItem".to_owned(), true), 1)]),
            );
        }
        let sometimes = parse_known("F/Read dynamodb:PutItem?: a lost race\n").expect("parses");
        assert!(sometimes[0].sometimes);
        let with = [known.clone(), sometimes.clone()].concat();
        assert!(super::problems(&raced, &with).is_empty());
        // Not exercised and not among the unexercised grants: no longer granted, stale.
        assert_eq!(super::problems(&r, &with).len(), 1);

        let stale = parse_known("F/Read dynamodb:Query: once needed\n").expect("parses");
        let all = [known, stale].concat();
        let problems = super::problems(&r, &all);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`F/Read dynamodb:Query` matches no unexercised grant"));
    }
}
