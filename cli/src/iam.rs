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

/// What `--check` refuses: denied calls on the stack's resources, and statements that allow no recorded call and
/// that no AWS-only reason explains. Empty when the roles fit the calls. (A redundant
/// statement, whose calls another statement allows too, is reported, not refused: SAM's
/// managed execution policies overlap the functions' own statements.)
/// `known`: `Function/Sid=reason` entries, statements known to be unexercised here, each with
/// why (printed, not refused).
pub fn problems(report: &Report, known: &[String]) -> Vec<String> {
    let reason = |function: &str, statement: &str| {
        known.iter().find_map(|k| {
            let (name, why) = k.split_once('=')?;
            let (f, sid) = name.split_once('/')?;
            (f == function && statement.rsplit('/').next() == Some(sid)).then_some(why)
        })
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
        for s in r.unexercised() {
            match reason(function, &s.name) {
                Some(why) => println!("known unexercised: {function}: {}: {why}", s.name),
                None => out.push(format!("{function}: {} allows no recorded call", s.name)),
            }
        }
    }
    out
}
