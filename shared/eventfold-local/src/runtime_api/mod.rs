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
    deadline_ms: i64,
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
    /// up to `timeout` for its answer; the deadline it is told is the same `timeout` away.
    pub async fn invoke(
        &self,
        payload: &Value,
        trace: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer> {
        let request_id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        let deadline_ms = chrono::Utc::now().timestamp_millis()
            + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2);
        {
            let mut state = self.shared.lock();
            state.waiting.insert(request_id.clone(), tx);
            state.queue.push_back(Pending {
                request_id: request_id.clone(),
                payload: Bytes::from(serde_json::to_vec(payload)?),
                trace: trace.map(str::to_owned),
                deadline_ms,
            });
        }
        self.shared.queued.notify_one();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => bail!("invocation {request_id} was dropped"),
            Err(_) => {
                self.shared.lock().waiting.remove(&request_id);
                if let Some(e) = self.init_error() {
                    bail!("the function failed to initialize: {e}");
                }
                bail!("no answer to invocation {request_id} within {timeout:?}")
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
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return response(400, "unreadable body"),
    };
    let document = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    if rest == "/init/error" {
        shared.lock().init_error = Some(document());
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
    let mut r = response(200, pending.payload);
    let headers = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &pending.request_id);
    set(
        "lambda-runtime-deadline-ms",
        &pending.deadline_ms.to_string(),
    );
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
}
