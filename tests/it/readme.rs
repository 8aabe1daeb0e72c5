//! The docs' runnable examples, run as written against a live local stack, so they cannot go
//! stale silently: the README's five-minute tour and the streaming examples of
//! `docs/http-api.md`.
//!
//! A document marks what runs with [`BEGIN`] and [`END`]. Every fenced `sh` block between them
//! holds only a `TOKEN=$(… eventfold token …)` line (its `--tenant`, `--sub` and `--scope` are
//! honoured, the token is minted here), `curl` commands against `localhost:3000` (sent to the
//! test stack's address instead, with `$TOKEN` in the environment) and comments. Each `curl`
//! is followed by its `# => STATUS, path value, ...` line: the HTTP status and fields of the
//! JSON answer (`path` as `a.b[0].c`, `value` as JSON). A command is sent once; a read (no
//! `-X POST`) is sent again until its line holds, as a reader would while the fan-out and the
//! saga catch up.

use serde_json::Value;
use std::time::{Duration, Instant};

/// Opens the part of a document whose `sh` blocks this test runs.
pub(crate) const BEGIN: &str = "<!-- begin: run by tests/it/readme.rs -->";
/// Closes it.
pub(crate) const END: &str = "<!-- end: run by tests/it/readme.rs -->";
/// The address the docs call the local HTTP API by.
const DOC_API: &str = "localhost:3000";
/// How long a read may take to show what the docs say (the saga takes a few steps, each
/// through the fan-out, on a shared machine).
const PATIENCE: Duration = Duration::from_secs(120);

/// One `curl` command and what the docs say it answers.
#[derive(Debug)]
struct Step {
    command: String,
    status: u16,
    fields: Vec<(String, Value)>,
}

/// The runnable part of a document: the token's claims and the steps, in order.
#[derive(Debug)]
struct Script {
    tenant: String,
    sub: String,
    scope: String,
    steps: Vec<Step>,
}

/// The document `path` (relative to the repository root).
fn read(path: &str) -> String {
    let file = tests::root().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The lines of the fenced `sh` blocks between [`BEGIN`] and [`END`], continuation lines
/// (`\` at the end) joined.
fn runnable_lines(doc: &str) -> Vec<String> {
    let (mut marked, mut fenced) = (false, false);
    let mut lines: Vec<String> = Vec::new();
    let mut continued = false;
    for raw in doc.lines() {
        let line = raw.trim_end();
        match line.trim() {
            BEGIN => marked = true,
            END => marked = false,
            "```sh" if marked => fenced = true,
            "```" if fenced => fenced = false,
            _ if marked && fenced => {
                let (text, more) = match line.strip_suffix('\\') {
                    Some(head) => (head.trim_end(), true),
                    None => (line, false),
                };
                match (continued, lines.last_mut()) {
                    (true, Some(last)) => {
                        last.push(' ');
                        last.push_str(text.trim_start());
                    }
                    _ => lines.push(text.to_owned()),
                }
                continued = more;
            }
            _ => {}
        }
    }
    assert!(!marked, "{BEGIN} without {END}");
    lines
}

/// Splits `text` at `sep` outside double quotes.
fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let (mut parts, mut part, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                part.push(c);
            }
            c if c == sep && !quoted => parts.push(std::mem::take(&mut part)),
            c => part.push(c),
        }
    }
    parts.push(part);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Parses `# => 201, version 1, events[0].type "OrderCreated"` (after the `# =>`).
fn expectation(text: &str) -> (u16, Vec<(String, Value)>) {
    let parts = split_outside_quotes(text, ',');
    let (status, fields) = parts
        .split_first()
        .unwrap_or_else(|| panic!("`# =>` without a status: {text}"));
    let status = status
        .parse()
        .unwrap_or_else(|_| panic!("`# =>` starts with an HTTP status: {text}"));
    let fields = fields
        .iter()
        .map(|field| {
            let (path, value) = field
                .split_once(' ')
                .unwrap_or_else(|| panic!("`path value` expected: {field}"));
            let value = serde_json::from_str(value.trim())
                .unwrap_or_else(|e| panic!("{value} is not JSON ({e}) in: {text}"));
            (path.to_owned(), value)
        })
        .collect();
    (status, fields)
}

/// The value of option `flag` (`--flag value` or `--flag "a b"`) on `line`.
fn option(line: &str, flag: &str) -> Option<String> {
    let words = split_outside_quotes(line, ' ');
    let at = words.iter().position(|w| w == flag)?;
    let value = words.get(at + 1)?;
    Some(value.trim_matches('"').to_owned())
}

/// The runnable part of `doc`; fails on anything it cannot run or check.
fn script(doc: &str) -> Script {
    let mut token: Option<String> = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut checked = true;
    for line in runnable_lines(doc) {
        let line = line.trim();
        if let Some(expect) = line.strip_prefix("# =>") {
            assert!(!checked, "`# =>` with no curl before it: {line}");
            let (status, fields) = expectation(expect);
            let step = steps.last_mut().expect("a curl before `# =>`");
            (step.status, step.fields) = (status, fields);
            checked = true;
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else if let Some(call) = line.strip_prefix("TOKEN=$(") {
            let call = call.strip_suffix(')').unwrap_or(call);
            assert!(
                call.contains("eventfold token"),
                "a token comes from `eventfold token`: {line}"
            );
            token = Some(call.to_owned());
        } else if line.starts_with("curl ") {
            assert!(checked, "a curl without its `# =>` line: {line}");
            assert!(line.contains(DOC_API), "a curl calls {DOC_API}: {line}");
            steps.push(Step {
                command: line.to_owned(),
                status: 0,
                fields: Vec::new(),
            });
            checked = false;
        } else {
            panic!("this test cannot run `{line}`: only TOKEN=$(eventfold token ...) and curl");
        }
    }
    assert!(checked, "the last curl has no `# =>` line");
    assert!(!steps.is_empty(), "no curl between {BEGIN} and {END}");
    let token = token.expect("a TOKEN=$(... eventfold token ...) line before the curls");
    // `eventfold token`'s defaults (cli/src/main.rs) for what the line leaves out.
    Script {
        tenant: option(&token, "--tenant").unwrap_or_else(|| "acme".into()),
        sub: option(&token, "--sub").unwrap_or_else(|| "dev".into()),
        scope: option(&token, "--scope").unwrap_or_else(|| "events:read events:write".into()),
        steps,
    }
}

/// The value at `path` (`a.b[0].c`) of `json`.
fn at<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    let mut here = json;
    for segment in path.split('.') {
        let mut pieces = segment.split('[');
        let name = pieces.next().unwrap_or_default();
        if !name.is_empty() {
            here = here.get(name)?;
        }
        for index in pieces {
            let index: usize = index.strip_suffix(']')?.parse().ok()?;
            here = here.get(index)?;
        }
    }
    Some(here)
}

/// Runs `command` with `curl` through `sh`, as a reader would: its status and its body.
async fn curl(command: &str, api: &str, token: &str) -> (u16, String) {
    let command = command.replace(DOC_API, api);
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{command} --max-time 60 --write-out '\\n%{{http_code}}'"
        ))
        .env("TOKEN", token)
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl runs (is it installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command}: {} {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let status = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{command}: no status in {stdout}"));
    (status, body.to_owned())
}

/// What is wrong with an answer, measured against `step`'s `# =>` line.
fn mismatch(step: &Step, status: u16, body: &str) -> Option<String> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if status != step.status {
        return Some(format!("status {status}, the docs say {}", step.status));
    }
    step.fields.iter().find_map(|(path, want)| {
        let got = at(&json, path);
        (got != Some(want)).then(|| format!("{path} is {got:?}, the docs say {want}"))
    })
}

/// Runs the runnable part of the document `path` against a fresh local stack.
async fn run_doc(path: &str) {
    let script = script(&read(path));
    let stack = tests::stack().await;
    let api = stack.api_url().trim_start_matches("http://").to_owned();
    let token = eventfold_local::jwt::issue(
        eventfold_local::jwt::DEV_SECRET,
        &script.tenant,
        &script.sub,
        &script.scope,
        3600,
    );
    for step in &script.steps {
        let read_only = !step.command.contains("-X POST") && !step.command.contains(" -d ");
        let start = Instant::now();
        loop {
            let (status, body) = curl(&step.command, &api, &token).await;
            let Some(wrong) = mismatch(step, status, &body) else {
                break;
            };
            if !read_only || start.elapsed() > PATIENCE {
                panic!("{path}: `{}`: {wrong}; body: {body}", step.command);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    tests::assert_no_denials(&stack);
    stack.stop().await;
}

#[test]
fn expectations_and_blocks_parse() {
    let doc = format!(
        "text\n```sh\ncurl not marked\n```\n{BEGIN}\n```sh\nTOKEN=$(eventfold token --sub bob --scope \"a b\")\n\
         curl -s -X POST localhost:3000/x \\\n  -d '{{\"k\": 1}}'\n# => 201, a.b[1].c \"x, y\", n 2\n```\n{END}\n"
    );
    let s = script(&doc);
    assert_eq!((s.tenant.as_str(), s.sub.as_str()), ("acme", "bob"));
    assert_eq!(s.scope, "a b");
    assert_eq!(s.steps.len(), 1);
    assert_eq!(
        s.steps[0].command,
        "curl -s -X POST localhost:3000/x -d '{\"k\": 1}'"
    );
    assert_eq!(s.steps[0].status, 201);
    assert_eq!(
        s.steps[0].fields,
        vec![
            ("a.b[1].c".to_owned(), Value::from("x, y")),
            ("n".to_owned(), Value::from(2))
        ]
    );
    let json = serde_json::json!({"a": {"b": [0, {"c": "x, y"}]}, "n": 2});
    assert_eq!(mismatch(&s.steps[0], 201, &json.to_string()), None);
    assert!(mismatch(&s.steps[0], 200, &json.to_string()).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_written() {
    run_doc("README.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_streaming_examples_run_as_written() {
    run_doc("docs/http-api.md").await;
}
