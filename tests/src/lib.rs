//! Harness for the integration tests: one serialized moto emulator per test binary, the
//! template's resources on it, and a local stack per test.
//!
//! A test that needs the emulator starts it here; when `.venv` is missing it fails loudly
//! (run `./scripts/setup`), it is never skipped.
#![forbid(unsafe_code)]

use cli::local::{LocalOptions, LocalStack};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Prefix of the test stacks' names.
pub const STACK: &str = "it";

struct Shared {
    endpoint: String,
    // Held so the emulator's stdin stays open; it exits when this process does.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static EMULATOR: OnceLock<Shared> = OnceLock::new();

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Endpoint of the shared emulator, started on first use (or `EVENTFOLD_TEST_ENDPOINT`).
pub fn endpoint() -> String {
    if let Ok(e) = std::env::var("EVENTFOLD_TEST_ENDPOINT") {
        return e;
    }
    EMULATOR
        .get_or_init(|| {
            let python = root().join(".venv/bin/python");
            assert!(
                python.exists(),
                "integration tests need the emulator: {} is missing; run ./scripts/setup",
                python.display()
            );
            let mut child = Command::new(&python)
                .arg(root().join("scripts/moto_server.py"))
                .args(["--port", "0", "--watch-stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting the moto emulator");
            let stdout = child.stdout.take().expect("piped stdout");
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            while !line.starts_with("READY ") {
                line.clear();
                let n = reader.read_line(&mut line).expect("reading moto's stdout");
                assert!(n > 0, "moto exited before it was ready");
            }
            let port = line.trim_start_matches("READY ").trim().to_owned();
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            Shared {
                endpoint: format!("http://127.0.0.1:{port}"),
                _stdin: Mutex::new(child.stdin.take().expect("piped stdin")),
                _child: Mutex::new(child),
            }
        })
        .endpoint
        .clone()
}

/// A local stack (resources from the template, HTTP API on a free port) on the shared emulator,
/// with tables of its own: the emulator's queries slow down as a table grows, so tests do not
/// share them.
pub async fn stack() -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    LocalStack::start(LocalOptions {
        root: root(),
        api_addr: "127.0.0.1:0".parse().expect("valid address"),
        emulator_port: 0,
        endpoint: Some(endpoint()),
        stack: format!("{STACK}-{}", &id[id.len() - 10..]),
        jwt_secret: cli::jwt::DEV_SECRET.to_owned(),
    })
    .await
    .expect("local stack starts")
}

/// The events table's name in the test stack.
pub fn events_table(stack: &LocalStack) -> String {
    table(stack, "EventsTable")
}

/// The physical name of the template's table `logical_id` in the test stack.
pub fn table(stack: &LocalStack, logical_id: &str) -> String {
    stack
        .template
        .tables()
        .into_iter()
        .find(|t| t.logical_id == logical_id)
        .unwrap_or_else(|| panic!("template defines {logical_id}"))
        .name
}

/// A tenant id no other test uses.
pub fn unique_tenant(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A token for `tenant` with `scope`.
pub fn token(tenant: &str, scope: &str) -> String {
    cli::jwt::issue(cli::jwt::DEV_SECRET, tenant, "tester", scope, 600)
}

/// A token with read and write scopes.
pub fn rw_token(tenant: &str) -> String {
    token(tenant, "events:read events:write")
}

/// A local stack like [`stack`] (own stack name, shared emulator) with event-source options:
/// handler overrides, which functions' event sources run, a short SQS visibility timeout.
pub async fn stack_with(esm: cli::esm::EsmOptions) -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    stack_named(&format!("{STACK}-{}", &id[id.len() - 10..]), esm).await
}

/// A local stack named `name` on the shared emulator (a second one with the same name finds
/// its resources in place).
pub async fn stack_named(name: &str, esm: cli::esm::EsmOptions) -> LocalStack {
    LocalStack::start_with(
        LocalOptions {
            root: root(),
            api_addr: "127.0.0.1:0".parse().expect("valid address"),
            emulator_port: 0,
            endpoint: Some(endpoint()),
            stack: name.to_owned(),
            jwt_secret: cli::jwt::DEV_SECRET.to_owned(),
        },
        esm,
    )
    .await
    .expect("local stack starts")
}

/// A stack without the event-source pollers: for tests of the write side only, so the
/// emulator is not also busy fanning their commits out.
pub async fn quiet_stack() -> LocalStack {
    stack_with(cli::esm::EsmOptions {
        enabled: false,
        ..Default::default()
    })
    .await
}

/// Asserts `reply` is an RFC 9457 problem with `status` and the stable type `slug`, and a
/// non-empty detail.
#[track_caller]
pub fn assert_problem(reply: &cli::httpc::Reply, status: u16, slug: &str) {
    assert_eq!(
        reply.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type, "application/problem+json");
    assert_eq!(
        reply.json["type"],
        format!("https://eventfold.dev/problems/{slug}"),
        "{}",
        reply.json
    );
    assert_eq!(reply.json["status"], status);
    assert!(
        reply.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        reply.json
    );
}
