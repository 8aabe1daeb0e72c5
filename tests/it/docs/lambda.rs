//! `docs/operations.md`'s `cargo lambda` block, checked: `eventfold local --print-env` runs as
//! written, and its env file is one `cargo lambda watch` accepts (started on it, with
//! `--only-lambda-apis`: it reads the file, then serves, building nothing) and every
//! function's constructor starts from; every `invoke` names a function of the template and a
//! sample event of a shape that function's events have, deserializing as the type it takes.
//!
//! Not run: the functions' builds and invocations. `cargo lambda watch` builds each of the
//! seven binaries on its first invocation: about a minute on 2 cores (run by hand: every
//! invoke of the block answered, the DLQ processor's `sqs.json` with both records failed, as
//! the docs say). Each function's samples go through its real binary in
//! `functions/*/tests/runtime.rs`.

use super::{Block, DOC_TARGET, block, code_and_comment, eventfold, sh, words};
use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::sqs::SqsEvent;
use eventfold_local::template::EventSourceSpec;
use eventfold_local::{FunctionSpec, Template};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where the docs write the env file; the test writes its own.
const DOC_ENV_FILE: &str = "/tmp/eventfold.env";

/// The `KEY=value` lines of an env file, by key; fails on any other line.
fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {line}"));
            let name = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            assert!(name, "not a variable name: {line}");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Builds function `binary` from `env` as its `main.rs` does (no network call).
fn builds(
    binary: &str,
    sdk: &aws_config::SdkConfig,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    let get = |k: &str| env.get(k).cloned();
    match binary {
        "command-api" => command_api::build(sdk, get).map(drop),
        "query-api" => query_api::build(sdk, get).map(drop),
        "streams-api" => streams_api::build(sdk, get).map(drop),
        "stream-publisher" => stream_publisher::build(sdk, get).map(drop),
        "projector" => projector::build(sdk, get).map(drop),
        "saga" => saga::build(sdk, get).map(drop),
        "dlq-processor" => dlq_processor::build(sdk, get).map(drop),
        other => return Err(format!("{other}: no constructor known here (add it)")),
    }
    .map_err(|e| e.to_string())
}

/// Why `sample` is not an event of function `f`: its shape is none of the function's template
/// events, or it does not deserialize as the type the function takes.
fn unfit(template: &Template, f: &FunctionSpec, sample: &Value) -> Option<String> {
    let has = |want: fn(&EventSourceSpec) -> bool| f.event_sources.iter().any(want);
    let parsed = if sample["requestContext"]["http"].is_object() {
        let key = sample["routeKey"].as_str().unwrap_or_default();
        if !template.route_keys(&f.binary).iter().any(|k| k == key) {
            return Some(format!("route `{key}` is not one of its routes"));
        }
        serde_json::from_value::<ApiGatewayV2httpRequest>(sample.clone()).map(drop)
    } else if sample["detail-type"].is_string() {
        if !has(|s| matches!(s, EventSourceSpec::Schedule(_))) {
            return Some("a scheduled event, and it has no schedule".into());
        }
        serde_json::from_value::<CloudWatchEvent>(sample.clone()).map(drop)
    } else {
        match sample["Records"][0]["eventSource"].as_str() {
            Some("aws:sqs") if has(|s| matches!(s, EventSourceSpec::Sqs(_))) => {
                serde_json::from_value::<SqsEvent>(sample.clone()).map(drop)
            }
            Some("aws:dynamodb") if has(|s| matches!(s, EventSourceSpec::DynamoDb(_))) => {
                serde_json::from_value::<dynamodb::Event>(sample.clone()).map(drop)
            }
            other => return Some(format!("records from {other:?}: none of its sources")),
        }
    };
    parsed.err().map(|e| e.to_string())
}

/// Starts `cargo lambda watch` as the block's `code` does, on a free port and with
/// `--only-lambda-apis` (no function is built or started): it reads the env file first and
/// exits on one it refuses. Passes once it serves; then stops it.
async fn watch(b: &Block, code: &str, path: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let w = words(code);
    let mut child = tokio::process::Command::new(&w[0])
        .args(&w[1..])
        .args(["--only-lambda-apis", "-P", &port.to_string()])
        .env("PATH", path)
        .current_dir(tests::root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("`{code}` starts: {e}"));
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if child.try_wait().expect("its status").is_some() {
            let out = child.wait_with_output().await.expect("its output");
            panic!(
                "{}: `{code}` exited before serving (a refused env file, or no .venv: scripts/setup): {} {}",
                b.at,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}: `{code}` serves within a minute (is .venv set up? scripts/setup)",
            b.at
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cargo_lambda_block_env_file_functions_and_samples_check() {
    let binary = eventfold().await.display().to_string();
    let b = block("cargo-lambda");
    let root = tests::root();
    let dir =
        std::env::temp_dir().join(format!("eventfold-docs-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let env_file = dir.join("eventfold.env");
    let mut path = None;
    let mut watched = false;
    let mut invokes: Vec<(String, PathBuf)> = Vec::new();
    for raw in &b.lines {
        let line = raw
            .trim()
            .replace(DOC_ENV_FILE, &env_file.display().to_string());
        let (code, comment) = code_and_comment(&line);
        let w = words(code);
        match w.first().map(String::as_str) {
            // `#   then a.json, b.json`: more samples of the last invoke's function.
            None => match comment.and_then(|c| c.strip_prefix("then ")) {
                Some(files) => {
                    let (name, first) = invokes.last().cloned().expect("an invoke first");
                    for file in files.split(',') {
                        invokes.push((name.clone(), first.with_file_name(file.trim())));
                    }
                }
                None => assert!(comment.is_none(), "{}: not read here: {line}", b.at),
            },
            Some(first) if first.starts_with("B=") => {
                assert_eq!(first, format!("B={DOC_TARGET}debug/eventfold"), "{}", b.at)
            }
            Some("$B") => {
                let all = sh(&line, &[("B", binary.clone())]).await;
                all.ok();
                // `# or --print-env projector (one function)`: a part of every function's,
                // except where it calls AWS: through the IAM proxy, as itself.
                if let Some(alt) = comment.and_then(|c| c.strip_prefix("or ")) {
                    let args = alt.split(" (").next().unwrap_or(alt);
                    let one = sh(&format!("$B local {args}"), &[("B", binary.clone())]).await;
                    let every = env_lines(&std::fs::read_to_string(&env_file).expect("written"));
                    let one = env_lines(one.ok());
                    for (k, v) in &one {
                        if k == "AWS_ENDPOINT_URL" {
                            assert_eq!(v, "http://127.0.0.1:4567", "{}: {args}", b.at);
                        } else if k == "AWS_ACCESS_KEY_ID" {
                            assert!(v.starts_with("LOCAL"), "{}: {args}: {v}", b.at);
                        } else if k != "AWS_SECRET_ACCESS_KEY" {
                            assert_eq!(every.get(k), Some(v), "{}: {args}: {k}", b.at);
                        }
                    }
                }
            }
            Some("export") => {
                assert_eq!(code, r#"export PATH="$PWD/.venv/bin:$PATH""#, "{}", b.at);
                let inherited = std::env::var("PATH").unwrap_or_default();
                path = Some(format!("{}:{inherited}", root.join(".venv/bin").display()));
            }
            Some("cargo") if w.get(1).is_some_and(|x| x == "lambda") => {
                match w.get(2).map(String::as_str) {
                    Some("watch") => {
                        watch(&b, code, path.as_deref().expect("PATH set first")).await;
                        watched = true;
                    }
                    Some("invoke") => {
                        let name = w.get(3).cloned().expect("a function");
                        let file = w.iter().skip_while(|x| *x != "--data-file").nth(1);
                        let file = PathBuf::from(file.expect("--data-file FILE"));
                        let more = comment.and_then(|c| c.strip_prefix("and "));
                        if let Some(more) = more.and_then(|m| m.split_whitespace().next()) {
                            invokes.push((name.clone(), file.with_file_name(more)));
                        }
                        invokes.push((name, file));
                    }
                    _ => panic!("{}: not checked here: {line}", b.at),
                }
            }
            _ => panic!("{}: not checked here: {line}", b.at),
        }
    }
    assert!(watched, "{}: cargo lambda watch", b.at);

    // Every function starts from the env file `--print-env all` wrote.
    let env = env_lines(&std::fs::read_to_string(&env_file).expect("the env file"));
    let endpoint = env.get("AWS_ENDPOINT_URL").cloned().unwrap_or_default();
    assert_eq!(
        endpoint, "http://127.0.0.1:4566",
        "the emulator ./scripts/dev starts"
    );
    let sdk = eventfold_local::emulator::local_sdk_config(&endpoint).await;
    let template = super::offline::template();
    for f in template.functions() {
        for (k, v) in &f.environment {
            assert_eq!(env.get(k), Some(v), "{}: {}'s {k}", b.at, f.binary);
        }
        if let Err(e) = builds(&f.binary, &sdk, &env) {
            panic!(
                "{}: {} does not start from the env file: {e}",
                b.at, f.binary
            );
        }
    }

    // Every invoke: a function of the template, one of its events.
    let mut invoked = BTreeSet::new();
    for (name, file) in &invokes {
        let f = template
            .functions()
            .into_iter()
            .find(|f| f.binary == *name)
            .unwrap_or_else(|| panic!("{}: the template runs no {name}", b.at));
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{}: {}: {e}", b.at, file.display()));
        let sample: Value = serde_json::from_str(&text).expect("a sample is JSON");
        if let Some(why) = unfit(&template, &f, &sample) {
            panic!("{}: {} is no event of {name}: {why}", b.at, file.display());
        }
        invoked.insert(name.clone());
    }
    let functions: BTreeSet<String> = template.functions().into_iter().map(|f| f.binary).collect();
    assert_eq!(invoked, functions, "{}: every function is invoked", b.at);
    assert!(invokes.len() >= 20, "{}: {invokes:?}", b.at);
    std::fs::remove_dir_all(&dir).ok();
}
