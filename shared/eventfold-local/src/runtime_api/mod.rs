//! The Lambda runtime API, emulated: run a function's real binary as Lambda runs it.
//!
//! [`RuntimeApi`] serves the runtime interface a Lambda execution environment offers its
//! bootstrap (`/2018-06-01/runtime/invocation/next`, `.../{id}/response`, `.../{id}/error`,
//! `/2018-06-01/runtime/init/error`) on a loopback port. A function binary started with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it ([`RuntimeApi::address`]) long-polls for events;
//! [`RuntimeApi::invoke`] hands it one, with the request id, deadline, function ARN and X-Ray
//! trace headers Lambda sends, and returns what the function answered. So a test runs the
//! same `main.rs`, runtime client and serialization as production, with no cargo-lambda and
//! no container.
//!
//! Lambda's limits hold: an event over 6,291,456 bytes is refused before the function sees it
//! (`RequestEntityTooLargeException`); a response over 6,291,556 bytes is refused to the
//! function with the runtime API's 413 and answered to the caller as the function error
//! `Function.ResponseSizeTooLarge`; the deadline runs from the moment the function takes the
//! event, and a function past it is answered `Sandbox.Timedout` ([`RuntimeApi::invoke`]).
//!
//! [`FunctionProcess`] starts a binary against one; [`standalone_env`] gives a
//! function's environment as the local stack resolves it (its template variables, the
//! endpoint, region and dummy credentials): for `eventfold local --print-env`, `cargo lambda
//! watch --env-file`, and for a binary started by a test.

mod env;
mod process;

pub use env::{
    env_file, provisioned_stack, provisioned_stack_at, request_trace, sample_event, standalone_env,
};
pub use process::{FunctionProcess, Launch, start_without, warm_ups};

use crate::serve::{Response, response, serve};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// The runtime API's version prefix.
const PREFIX: &str = "/2018-06-01/runtime";
/// How long an invocation may wait for the function to take it (its init, under an
/// emulator too), before its own timeout starts.
const TAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a function answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The body it posted to `/response`.
    Response(Value),
    /// The error document it posted to `/error` (`errorType`, `errorMessage`).
    Error(Value),
}

impl Answer {
    /// The response; an error answer is an `Err` naming it.
    pub fn response(self) -> Result<Value> {
        match self {
            Self::Response(v) => Ok(v),
            Self::Error(e) => Err(anyhow!("the function answered an error: {e}")),
        }
    }
}

/// One invocation waiting for the function to take it.
struct Pending {
    request_id: String,
    payload: Bytes,
    trace: Option<String>,
    timeout: Duration,
    /// Told when the function takes the invocation: its deadline starts then.
    taken: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    waiting: HashMap<String, oneshot::Sender<Answer>>,
    init_error: Option<Value>,
    /// When the function first asked for an invocation: the end of its init.
    first_poll: Option<std::time::Instant>,
}

struct Shared {
    state: Mutex<State>,
    queued: Notify,
    polled: Notify,
    /// Told when the function reports an init error: nothing will take an invocation then.
    init_failed: Notify,
    function_arn: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Locks `m`: a panic while holding the lock leaves plain data behind, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An emulated Lambda runtime API on a loopback port; stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeApi")
            .field("addr", &self.addr)
            .finish()
    }
}

impl RuntimeApi {
    /// Serves the runtime API for a function whose ARN is `function_arn` on a free port of
    /// 127.0.0.1.
    pub async fn start(function_arn: impl Into<String>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the runtime API")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Notify::new(),
            polled: Notify::new(),
            init_failed: Notify::new(),
            function_arn: function_arn.into(),
        });
        let state = shared.clone();
        let server = tokio::spawn(async move {
            let _ = serve(listener, move |req, _| {
                let shared = state.clone();
                async move { route(&shared, req).await }
            })
            .await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for the function (`host:port`).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// What the function posted to `/init/error`, if it failed to start that way.
    pub fn init_error(&self) -> Option<Value> {
        self.shared.lock().init_error.clone()
    }

    /// Waits up to `timeout` for the function's first `/invocation/next`, which it sends
    /// when its init is done (Lambda's init phase ends there): the instant it came.
    pub async fn first_poll(&self, timeout: Duration) -> Result<std::time::Instant> {
        let wait = async {
            loop {
                let polled = self.shared.polled.notified();
                if let Some(at) = self.shared.lock().first_poll {
                    return at;
                }
                polled.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(at) => Ok(at),
            Err(_) => match self.init_error() {
                Some(e) => bail!("the function failed to initialize: {e}"),
                None => bail!("the function did not finish its init within {timeout:?}"),
            },
        }
    }

    /// Hands `payload` to the function (with `trace` as `Lambda-Runtime-Trace-Id`) and waits
    /// for its answer: up to 30 s for the function to take it (its init included), then
    /// `timeout` from that moment, the deadline it is told. A function past its deadline is
    /// answered as Lambda answers it (`Sandbox.Timedout`, "Task timed out after N seconds");
    /// the caller stops it, as Lambda stops the execution environment. An event over
    /// Lambda's 6 MB request limit is refused without reaching the function.
    pub async fn invoke(
        &self,
        payload: &Value,
        trace: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer> {
        let payload = Bytes::from(serde_json::to_vec(payload)?);
        if payload.len() > crate::gateway::limits::MAX_REQUEST {
            bail!(
                "RequestEntityTooLargeException: Request must be smaller than {} bytes for the InvokeFunction operation",
                crate::gateway::limits::MAX_REQUEST
            );
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        let (tx, mut rx) = oneshot::channel();
        let (taken, was_taken) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            state.waiting.insert(request_id.clone(), tx);
            state.queue.push_back(Pending {
                request_id: request_id.clone(),
                payload,
                trace: trace.map(str::to_owned),
                timeout,
                taken,
            });
        }
        self.shared.queued.notify_one();
        let forget = || {
            let mut state = self.shared.lock();
            state.waiting.remove(&request_id);
            state.queue.retain(|p| p.request_id != request_id);
        };
        // Until the function takes it (an answer may come with the take), or reports that it
        // cannot start.
        let init_failed = async {
            loop {
                let failed = self.shared.init_failed.notified();
                if self.init_error().is_some() {
                    return;
                }
                failed.await;
            }
        };
        let took = tokio::select! {
            taken = tokio::time::timeout(TAKE_TIMEOUT.max(timeout), was_taken) => taken.is_ok(),
            () = init_failed => false,
        };
        if !took {
            forget();
            if let Some(e) = self.init_error() {
                bail!("the function failed to initialize: {e}");
            }
            bail!("the function did not take invocation {request_id} within {TAKE_TIMEOUT:?}")
        }
        match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => bail!("invocation {request_id} was dropped"),
            Err(_) => {
                forget();
                Ok(Answer::Error(serde_json::json!({
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": format!(
                        "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                        timeout.as_secs_f64()
                    ),
                })))
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn route(shared: &Shared, req: hyper::Request<Incoming>) -> Response {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return response(404, "no such route");
    };
    let method = req.method().clone();
    if method == hyper::Method::GET && rest == "/invocation/next" {
        return next(shared).await;
    }
    if method != hyper::Method::POST {
        return response(404, "no such route");
    }
    let max = crate::gateway::limits::MAX_RESPONSE;
    let body = match http_body_util::Limited::new(req.into_body(), max)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return too_large(shared, rest);
        }
        Err(_) => return response(400, "unreadable body"),
    };
    let document = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    if rest == "/init/error" {
        shared.lock().init_error = Some(document());
        shared.init_failed.notify_waiters();
        return response(202, "{}");
    }
    let Some((id, kind)) = rest
        .strip_prefix("/invocation/")
        .and_then(|r| r.rsplit_once('/'))
    else {
        return response(404, "no such route");
    };
    let answer = match kind {
        "response" => Answer::Response(document()),
        "error" => Answer::Error(document()),
        _ => return response(404, "no such route"),
    };
    match shared.lock().waiting.remove(id) {
        Some(tx) => {
            let _ = tx.send(answer);
            response(202, "{}")
        }
        None => response(400, "unknown or already answered request id"),
    }
}

/// A body past Lambda's response limit: the runtime API refuses it (413, as Lambda's does)
/// and the invocation it answers fails as Lambda fails it, `Function.ResponseSizeTooLarge`.
fn too_large(shared: &Shared, rest: &str) -> Response {
    let max = crate::gateway::limits::MAX_RESPONSE;
    if let Some(id) = rest
        .strip_prefix("/invocation/")
        .and_then(|r| r.strip_suffix("/response"))
        && let Some(tx) = shared.lock().waiting.remove(id)
    {
        let _ = tx.send(Answer::Error(serde_json::json!({
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": format!(
                "Response payload size exceeded maximum allowed payload size ({max} bytes)."
            ),
        })));
    }
    let refusal = serde_json::json!({
        "errorMessage": format!("Exceeded maximum allowed payload size ({max} bytes)."),
        "errorType": "RequestEntityTooLarge",
    });
    response(413, refusal.to_string())
}

/// Long-polls for the next invocation, as Lambda does while the function is idle.
async fn next(shared: &Shared) -> Response {
    {
        let mut state = shared.lock();
        if state.first_poll.is_none() {
            state.first_poll = Some(std::time::Instant::now());
            shared.polled.notify_waiters();
        }
    }
    let pending = loop {
        let notified = shared.queued.notified();
        if let Some(p) = shared.lock().queue.pop_front() {
            break p;
        }
        notified.await;
    };
    // The deadline runs from here, as Lambda's does from the invocation's start.
    let deadline_ms = chrono::Utc::now().timestamp_millis()
        + i64::try_from(pending.timeout.as_millis()).unwrap_or(i64::MAX / 2);
    let _ = pending.taken.send(());
    let mut r = response(200, pending.payload);
    let headers = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &pending.request_id);
    set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &shared.function_arn);
    if let Some(trace) = &pending.trace {
        set("lambda-runtime-trace-id", trace);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal runtime client, as a bootstrap speaks to the API.
    async fn call(
        addr: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, HashMap<String, String>, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("writes");
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.expect("reads");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    #[tokio::test]
    async fn invocations_go_out_through_next_and_come_back_as_answers() {
        let api = RuntimeApi::start("arn:aws:lambda:us-east-1:123456789012:function:worker")
            .await
            .expect("starts");
        let addr = api.address();
        let client = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (status, headers, body) =
                    call(&addr, "GET", "/2018-06-01/runtime/invocation/next", "").await;
                assert_eq!(status, 200);
                let id = headers["lambda-runtime-aws-request-id"].clone();
                let event: Value = serde_json::from_str(&body).expect("json");
                let path = if event["fail"] == json!(true) {
                    format!("/2018-06-01/runtime/invocation/{id}/error")
                } else {
                    format!("/2018-06-01/runtime/invocation/{id}/response")
                };
                let answer =
                    json!({"echo": event, "trace": headers.get("lambda-runtime-trace-id")});
                let (status, _, _) = call(&addr, "POST", &path, &answer.to_string()).await;
                assert_eq!(status, 202);
                // A second answer to the same invocation is refused.
                let (status, _, _) = call(&addr, "POST", &path, "{}").await;
                assert_eq!(status, 400);
                seen.push(headers["lambda-runtime-invoked-function-arn"].clone());
            }
            seen
        });
        let wait = Duration::from_secs(5);
        let ok = api
            .invoke(&json!({"n": 1}), Some("Root=1-a"), wait)
            .await
            .expect("answered");
        assert_eq!(
            ok,
            Answer::Response(json!({"echo": {"n": 1}, "trace": "Root=1-a"}))
        );
        let failed = api
            .invoke(&json!({"fail": true}), None, wait)
            .await
            .expect("answered");
        assert!(matches!(failed, Answer::Error(_)), "{failed:?}");
        assert!(failed.response().is_err());
        let arns = client.await.expect("client");
        assert!(arns.iter().all(|a| a.ends_with(":function:worker")));
        let (status, _, _) = call(
            &api.address(),
            "POST",
            "/2018-06-01/runtime/init/error",
            "{\"errorType\":\"x\"}",
        )
        .await;
        assert_eq!(status, 202);
        assert_eq!(api.init_error(), Some(json!({"errorType": "x"})));
        let unanswered = api
            .invoke(&json!({}), None, Duration::from_millis(200))
            .await
            .expect_err("nobody polls");
        assert!(
            unanswered.to_string().contains("initialize"),
            "{unanswered}"
        );
    }

    #[tokio::test]
    async fn lambdas_payload_limits_and_deadline_hold() {
        use crate::gateway::limits::{MAX_REQUEST, MAX_RESPONSE};
        let api = RuntimeApi::start("arn:aws:lambda:us-east-1:123456789012:function:worker")
            .await
            .expect("starts");
        let wait = Duration::from_secs(5);
        // An event over the request limit never reaches the function.
        let big = Value::String("e".repeat(MAX_REQUEST));
        let refused = api.invoke(&big, None, wait).await.expect_err("refused");
        assert!(
            refused
                .to_string()
                .contains("RequestEntityTooLargeException"),
            "{refused}"
        );
        assert!(api.shared.lock().queue.is_empty());
        // A response over the response limit: 413 to the function, a function error to the
        // caller.
        let addr = api.address();
        let client = tokio::spawn(async move {
            let (_, headers, _) =
                call(&addr, "GET", "/2018-06-01/runtime/invocation/next", "").await;
            let id = &headers["lambda-runtime-aws-request-id"];
            let path = format!("/2018-06-01/runtime/invocation/{id}/response");
            let body = format!("\"{}\"", "r".repeat(MAX_RESPONSE));
            call(&addr, "POST", &path, &body).await
        });
        let answer = api.invoke(&json!({}), None, wait).await.expect("answered");
        assert_eq!(
            answer,
            Answer::Error(json!({
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
            }))
        );
        let (status, _, body) = client.await.expect("client");
        assert_eq!(status, 413);
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json"),
            json!({
                "errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).",
                "errorType": "RequestEntityTooLarge",
            })
        );
        // The deadline runs from the take: a function that takes the event and never answers
        // is timed out, and told the deadline it missed.
        let addr = api.address();
        let taker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await; // the take comes late
            let taken = chrono::Utc::now().timestamp_millis();
            let (_, headers, _) =
                call(&addr, "GET", "/2018-06-01/runtime/invocation/next", "").await;
            headers["lambda-runtime-deadline-ms"]
                .parse::<i64>()
                .expect("ms")
                - taken
        });
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let answer = api
            .invoke(&json!({}), None, timeout)
            .await
            .expect("answered");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "timed from the take"
        );
        let Answer::Error(error) = answer else {
            panic!("a timeout: {answer:?}");
        };
        assert_eq!(error["errorType"], "Sandbox.Timedout");
        assert!(
            error["errorMessage"]
                .as_str()
                .is_some_and(|m| m.ends_with("Task timed out after 0.20 seconds")),
            "{error}"
        );
        let told = taker.await.expect("taker");
        assert!(
            (150..400).contains(&told),
            "deadline {told} ms after the take"
        );
    }
}
