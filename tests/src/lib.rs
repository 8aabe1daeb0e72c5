//! Harness for the integration tests: one serialized moto emulator per test binary, the
//! template's resources on it, and a local stack per test.
//!
//! A test that needs the emulator starts it here; when `.venv` is missing it fails loudly
//! (run `./scripts/setup`), it is never skipped.
#![forbid(unsafe_code)]

use eventfold_local::emulator::Emulator;
use eventfold_local::{EsmOptions, JwtConfig, LocalOptions, LocalStack};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Prefix of the test stacks' names.
pub const STACK: &str = "it";

static EMULATOR: OnceLock<Emulator> = OnceLock::new();

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Endpoint of the shared emulator, started on first use (or `EVENTFOLD_TEST_ENDPOINT`).
/// It lives until the test binary exits (statics are never dropped; moto then sees its
/// stdin close and exits).
pub fn endpoint() -> String {
    if let Ok(e) = std::env::var("EVENTFOLD_TEST_ENDPOINT") {
        return e;
    }
    EMULATOR
        .get_or_init(|| {
            Emulator::start_blocking(&root(), 0)
                .unwrap_or_else(|e| panic!("integration tests need the emulator: {e:#}"))
        })
        .endpoint
        .clone()
}

/// A local stack (resources from the template, HTTP API on a free port) on the shared emulator,
/// with tables of its own: the emulator's queries slow down as a table grows, so tests do not
/// share them.
pub async fn stack() -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    cli::local::start(LocalOptions {
        root: root(),
        api_addr: "127.0.0.1:0".parse().expect("valid address"),
        emulator_port: 0,
        endpoint: Some(endpoint()),
        stack: format!("{STACK}-{}", &id[id.len() - 10..]),
        auth: JwtConfig::dev(),
        parameter_overrides: Vec::new(),
        iam: true,
        iam_port: 0,
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
    eventfold_local::jwt::issue(
        eventfold_local::jwt::DEV_SECRET,
        tenant,
        "tester",
        scope,
        600,
    )
}

/// A token with read and write scopes.
pub fn rw_token(tenant: &str) -> String {
    token(tenant, "events:read events:write")
}

/// A local stack like [`stack`] (own stack name, shared emulator) with event-source options:
/// handler overrides, which functions' event sources run, a short SQS visibility timeout.
pub async fn stack_with(esm: EsmOptions) -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    stack_named(&format!("{STACK}-{}", &id[id.len() - 10..]), esm).await
}

/// A local stack named `name` on the shared emulator (a second one with the same name finds
/// its resources in place).
pub async fn stack_named(name: &str, esm: EsmOptions) -> LocalStack {
    cli::local::start_with(
        LocalOptions {
            root: root(),
            api_addr: "127.0.0.1:0".parse().expect("valid address"),
            emulator_port: 0,
            endpoint: Some(endpoint()),
            stack: name.to_owned(),
            auth: JwtConfig::dev(),
            parameter_overrides: Vec::new(),
            iam: true,
            iam_port: 0,
        },
        esm,
    )
    .await
    .expect("local stack starts")
}

/// A stack without the event-source pollers: for tests of the write side only, so the
/// emulator is not also busy fanning their commits out.
pub async fn quiet_stack() -> LocalStack {
    stack_with(EsmOptions {
        enabled: false,
        ..Default::default()
    })
    .await
}

/// Asserts `reply` is an RFC 9457 problem with `status` and the stable type `slug`, and a
/// non-empty detail.
#[track_caller]
pub fn assert_problem(reply: &eventfold_local::httpc::Reply, status: u16, slug: &str) {
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

/// Asserts that `reply` is API Gateway's own answer (not a function's problem document):
/// `status` with `{"message": message}` as `application/json`.
pub fn assert_gateway(reply: &eventfold_local::httpc::Reply, status: u16, message: &str) {
    assert_eq!(
        (reply.status, reply.content_type.as_str(), &reply.json),
        (
            status,
            "application/json",
            &serde_json::json!({ "message": message })
        ),
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
}

/// The context of a command the tests issue directly (not through HTTP).
pub fn ctx(tenant: &str, id: &str) -> eventfold::CommandContext {
    eventfold::CommandContext::root(tenant, "tester", id)
}

/// The event types of `aggregate/id` through the HTTP API, oldest first (at most 1,000).
pub async fn event_types(
    http: &eventfold_local::httpc::Http,
    token: &str,
    aggregate: &str,
    id: &str,
) -> Vec<String> {
    let path = format!("/api/v1/events/aggregates/{aggregate}/{id}/events?limit=1000");
    let r = http.get(&path, Some(token)).await.expect("get");
    assert_eq!(r.status, 200, "{path}: {}", r.json);
    r.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Asserts that IAM denied none of the stack's function calls (a denial the code absorbs,
/// e.g. by a fallback, would otherwise pass unseen here and degrade only in AWS).
#[track_caller]
pub fn assert_no_denials(stack: &LocalStack) {
    let iam = stack.iam.as_ref().expect("IAM is enforced in the tests");
    let denials = iam.denials();
    assert!(
        denials.is_empty(),
        "IAM denied {} calls; first: {}",
        denials.len(),
        denials
            .first()
            .map(|d| d.message.as_str())
            .unwrap_or_default()
    );
}
