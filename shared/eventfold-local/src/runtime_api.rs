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
//! [`standalone_env`] gives a function's environment as the local stack resolves it (its
//! template variables, the endpoint, region and dummy credentials): for `eventfold local
//! --print-env`, `cargo lambda watch --env-file`, and for a binary started by a test.

use crate::template::Template;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
        let server = tokio::spawn(serve(listener, shared.clone()));
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

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn route(shared: &Shared, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return reply(404, "no such route");
    };
    let method = req.method().clone();
    if method == hyper::Method::GET && rest == "/invocation/next" {
        return next(shared).await;
    }
    if method != hyper::Method::POST {
        return reply(404, "no such route");
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(400, "unreadable body"),
    };
    let document = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    if rest == "/init/error" {
        shared.lock().init_error = Some(document());
        return reply(202, "{}");
    }
    let Some((id, kind)) = rest
        .strip_prefix("/invocation/")
        .and_then(|r| r.rsplit_once('/'))
    else {
        return reply(404, "no such route");
    };
    let answer = match kind {
        "response" => Answer::Response(document()),
        "error" => Answer::Error(document()),
        _ => return reply(404, "no such route"),
    };
    match shared.lock().waiting.remove(id) {
        Some(tx) => {
            let _ = tx.send(answer);
            reply(202, "{}")
        }
        None => reply(400, "unknown or already answered request id"),
    }
}

/// Long-polls for the next invocation, as Lambda does while the function is idle.
async fn next(shared: &Shared) -> hyper::Response<Full<Bytes>> {
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
    let mut r = reply(200, pending.payload);
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

/// The environment of the function `name` (its binary, e.g. `projector`, or its logical id)
/// against a local stack whose template is `template` and whose AWS endpoint is `endpoint`:
/// every variable of its template environment as the stack resolves it, then
/// `AWS_ENDPOINT_URL`, `AWS_REGION` and, unless the process has credentials of its own,
/// moto's dummy ones. Sorted by name.
pub fn standalone_env(
    template: &Template,
    name: &str,
    endpoint: &str,
    region: &str,
) -> Result<Vec<(String, String)>> {
    let functions = template.functions();
    let Some(function) = functions
        .iter()
        .find(|f| f.binary == name || f.logical_id == name)
    else {
        let known: Vec<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
        bail!(
            "the template has no function '{name}'; known: {}",
            known.join(", ")
        );
    };
    let mut env: Vec<(String, String)> = function
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_owned()));
    env.push(("AWS_REGION".into(), region.to_owned()));
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        env.push(("AWS_ACCESS_KEY_ID".into(), "test".into()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "test".into()));
    }
    env.sort();
    Ok(env)
}

/// A function's binary running against a [`RuntimeApi`] with the environment the local
/// stack gives it, its stdout and stderr collected line by line; killed when dropped.
pub struct FunctionProcess {
    api: RuntimeApi,
    spawned: std::time::Instant,
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for FunctionProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionProcess")
            .field("api", &self.api)
            .finish()
    }
}

fn collect_lines(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Arc<Mutex<Vec<String>>> {
    use tokio::io::AsyncBufReadExt;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(reader).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line);
        }
    });
    lines
}

impl FunctionProcess {
    /// Starts `binary` as the template function `name` of `stack` would run in Lambda: the
    /// [`standalone_env`] only (the process environment is not inherited), the runtime's own
    /// variables, and `AWS_LAMBDA_RUNTIME_API` pointing at a fresh [`RuntimeApi`].
    pub async fn start(
        binary: &std::path::Path,
        stack: &crate::LocalStack,
        name: &str,
    ) -> Result<Self> {
        let region = stack
            .sdk
            .region()
            .map_or("us-east-1".to_owned(), ToString::to_string);
        let env = standalone_env(&stack.template, name, &stack.endpoint, &region)?;
        let function = stack
            .template
            .functions()
            .into_iter()
            .find(|f| f.binary == name || f.logical_id == name)
            .ok_or_else(|| anyhow!("no function {name}"))?;
        let physical = stack.template.physical_name(&function.logical_id);
        let arn = stack
            .template
            .arn(&function.logical_id)
            .unwrap_or_else(|| physical.clone());
        Self::spawn(binary, env, &physical, &arn).await
    }

    /// Starts `binary` with exactly `env` (plus the runtime's variables for a function named
    /// `function_name` with ARN `arn`) against a fresh [`RuntimeApi`].
    pub async fn spawn(
        binary: &std::path::Path,
        env: Vec<(String, String)>,
        function_name: &str,
        arn: &str,
    ) -> Result<Self> {
        let physical = function_name;
        let api = RuntimeApi::start(arn).await?;
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .envs(env)
            // Credentials and region are given: never ask an instance metadata service.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", physical)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{physical}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let spawned = std::time::Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = collect_lines(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let stderr = collect_lines(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
        Ok(Self {
            api,
            spawned,
            child,
            stdout,
            stderr,
        })
    }

    /// Waits up to `timeout` for the function's init to end (its first poll for an
    /// invocation): how long it took from the process's start.
    pub async fn init_duration(&self, timeout: Duration) -> Result<Duration> {
        Ok(self.api.first_poll(timeout).await? - self.spawned)
    }

    /// Invokes the function with `payload` (and `trace` as the invocation's X-Ray header);
    /// waits at most 30 s. Fails with the function's stderr when the process has exited.
    pub async fn invoke(&mut self, payload: &Value, trace: Option<&str>) -> Result<Answer> {
        let answer = self
            .api
            .invoke(payload, trace, Duration::from_secs(30))
            .await;
        if answer.is_err()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            bail!(
                "the function exited ({status}): {}",
                self.stderr().join("\n")
            );
        }
        answer
    }

    /// Invokes with an API Gateway HTTP API request (its `x-amzn-trace-id` header as the
    /// invocation's trace): the answer's status and JSON body.
    pub async fn call_http(&mut self, event: &Value) -> Result<(u64, Value)> {
        let trace = request_trace(event).map(str::to_owned);
        let answer = self.invoke(event, trace.as_deref()).await?.response()?;
        let status = answer["statusCode"]
            .as_u64()
            .ok_or_else(|| anyhow!("no statusCode in {answer}"))?;
        let body = answer["body"]
            .as_str()
            .ok_or_else(|| anyhow!("no text body in {answer}"))?;
        let body = serde_json::from_str(body).with_context(|| format!("body {body}"))?;
        Ok((status, body))
    }

    /// The lines it printed on stdout so far (JSON logs and EMF metrics).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The lines it printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for the process to exit by itself (a function that cannot start).
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// The template's resources on an emulator of their own, with no in-process handler and no
/// event-source poller: the stack a function runs against as a process ([`FunctionProcess`]),
/// consuming nothing behind its back. `root` is the repository root.
pub async fn provisioned_stack(root: &std::path::Path) -> Result<crate::LocalStack> {
    provisioned_stack_at(root, None).await
}

/// [`provisioned_stack`] on the emulator already serving at `endpoint` (`None`: one of its
/// own).
pub async fn provisioned_stack_at(
    root: &std::path::Path,
    endpoint: Option<String>,
) -> Result<crate::LocalStack> {
    let options = crate::LocalOptions {
        root: root.to_path_buf(),
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        emulator_port: 0,
        endpoint,
        stack: "eventfold-local".to_owned(),
        auth: crate::JwtConfig::dev(),
        parameter_overrides: Vec::new(),
    };
    let esm = crate::EsmOptions {
        enabled: false,
        ..crate::EsmOptions::default()
    };
    crate::LocalStack::start(options, &crate::Functions::new(), esm).await
}

/// A function's sample event: `events/{name}.json` of the crate whose manifest directory is
/// `manifest_dir` (a test's `env!("CARGO_MANIFEST_DIR")`).
pub fn sample_event(manifest_dir: &std::path::Path, name: &str) -> Result<Value> {
    let path = manifest_dir.join("events").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The X-Ray trace header API Gateway put on an HTTP API request event, if any.
pub fn request_trace(event: &Value) -> Option<&str> {
    event["headers"]["x-amzn-trace-id"].as_str()
}

/// Starts `binary` as the function `name` of the template under `root` with every setting
/// but `missing`, expects it to fail at start, and returns what it printed on stderr.
pub async fn start_without(
    binary: &std::path::Path,
    root: &std::path::Path,
    name: &str,
    missing: &str,
) -> Result<String> {
    let template = Template::load(
        &root.join(crate::stack::TEMPLATE_PATH),
        "eventfold-local",
        "us-east-1",
    )?;
    let env = standalone_env(&template, name, "http://127.0.0.1:9", "us-east-1")?
        .into_iter()
        .filter(|(k, _)| k != missing)
        .collect();
    let mut f = FunctionProcess::spawn(binary, env, name, "arn:test").await?;
    let status = f
        .exited(Duration::from_secs(20))
        .await
        .ok_or_else(|| anyhow!("{name} without {missing} did not exit at start"))?;
    if status.success() {
        bail!("{name} without {missing} exited successfully");
    }
    // The readers drain the pipes after the exit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(f.stderr().join("\n"))
}

/// `KEY=value` lines, as `cargo lambda watch --env-file` and `env $(...)` read them.
pub fn env_file(env: &[(String, String)]) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// The init-time warm-ups a function logged (`eventfold_aws::warmup`) among its stdout
/// `lines`: each endpoint (`dynamodb:<table>`, `sns:<arn>`) and the error, if its call failed.
pub fn warm_ups(lines: &[String]) -> Vec<(String, Option<String>)> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|log| {
            let fields = log.get("fields")?;
            let message = fields.get("message")?.as_str()?;
            let endpoint = fields.get("endpoint")?.as_str()?.to_owned();
            match message {
                "warmed up" => Some((endpoint, None)),
                "warm-up call failed" => {
                    Some((endpoint, Some(fields.get("error")?.as_str()?.to_owned())))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEMPLATE: &str = r#"
Parameters:
  Level:
    Type: String
    Default: info
Globals:
  Function:
    Environment:
      Variables:
        RUST_LOG: !Ref Level
Resources:
  Things:
    Type: AWS::DynamoDB::Table
  WorkerFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: worker
    Properties:
      Environment:
        Variables:
          THINGS_TABLE: !Ref Things
"#;

    #[test]
    fn a_function_env_is_the_template_env_plus_the_endpoint() {
        let template = Template::parse(TEMPLATE, "eventfold-local", "us-east-1").expect("parses");
        let env = standalone_env(&template, "worker", "http://127.0.0.1:4566", "us-east-1")
            .expect("known");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("THINGS_TABLE"), Some("eventfold-local-Things"));
        assert_eq!(get("RUST_LOG"), Some("info"));
        assert_eq!(get("AWS_ENDPOINT_URL"), Some("http://127.0.0.1:4566"));
        assert_eq!(get("AWS_REGION"), Some("us-east-1"));
        let by_id = standalone_env(&template, "WorkerFunction", "e", "r").expect("known");
        assert_eq!(
            by_id.len(),
            standalone_env(&template, "worker", "e", "r")
                .expect("k")
                .len()
        );
        let text = env_file(&env);
        assert!(
            text.contains("THINGS_TABLE=eventfold-local-Things\n"),
            "{text}"
        );
        let err = standalone_env(&template, "nope", "e", "r").expect_err("unknown");
        assert!(err.to_string().contains("known: worker"), "{err}");
    }

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
