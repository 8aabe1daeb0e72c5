//! A function's real binary as a child process against a [`RuntimeApi`]: started with the
//! environment Lambda gives it, invoked, and read back (its stdout and stderr lines).
//!
//! Lambda's `Timeout` and `MemorySize` hold: a function started from the template
//! ([`FunctionProcess::start_with`]) is timed out at its `Timeout` (the environment is then
//! stopped, as Lambda stops it), and stopped when its peak resident memory (the kernel's
//! `VmHWM`, sampled during the invocation and checked after it) passes its `MemorySize`, as
//! Lambda stops a function out of memory. Resident memory is the measure because it is what
//! Lambda's limit counts; an address-space `setrlimit` would count reserved, untouched
//! memory (thread stacks, allocator arenas) and needs `unsafe` before `exec` besides. Under
//! an emulator (qemu) the emulator's own memory counts too, so the check is stricter there.

use super::env::{function, request_trace, standalone_env};
use super::{Answer, RuntimeApi, lock};
use crate::template::Template;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A function's binary running against a [`RuntimeApi`] with the environment the local
/// stack gives it, its stdout and stderr collected line by line; killed when dropped.
pub struct FunctionProcess {
    api: RuntimeApi,
    spawned: Instant,
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    timeout: Duration,
    memory_mb: u64,
}

/// How long an invocation may run when no template gives the function a `Timeout`.
const UNTEMPLATED_TIMEOUT: Duration = Duration::from_secs(30);

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
            lock(&sink).push(line);
        }
    });
    lines
}

/// How a function's code is started: a program (the function's own binary, or an emulator
/// such as `qemu-aarch64-static` with the binary among its arguments), the working directory
/// Lambda gives it (`LAMBDA_TASK_ROOT`, `/var/task` in Lambda), and the user it runs as.
#[derive(Debug, Clone)]
pub struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    task_root: Option<PathBuf>,
    user: Option<(u32, u32)>,
}

impl Launch {
    /// Runs `program` directly (a native binary), from the current directory.
    pub fn native(program: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            args: Vec::new(),
            task_root: None,
            user: None,
        }
    }

    /// Runs `program` with `args` (e.g. an emulator and the binary it runs).
    pub fn command(program: &Path, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            ..Self::native(program)
        }
    }

    /// In `dir` as its working directory and `LAMBDA_TASK_ROOT`, as Lambda runs the code it
    /// unzipped into `/var/task`.
    pub fn task_root(mut self, dir: &Path) -> Self {
        self.task_root = Some(dir.to_path_buf());
        self
    }

    /// As the user `uid` and group `gid` (Lambda runs a function as an unprivileged user; a
    /// root caller gives one so that read-only files are read-only to the function).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }
}

impl FunctionProcess {
    /// Starts `binary` as the template function `name` of `stack` would run in Lambda: the
    /// [`standalone_env`] only (the process environment is not inherited), the runtime's own
    /// variables, and `AWS_LAMBDA_RUNTIME_API` pointing at a fresh [`RuntimeApi`].
    pub async fn start(binary: &Path, stack: &crate::LocalStack, name: &str) -> Result<Self> {
        Self::start_with(&Launch::native(binary), stack, name).await
    }

    /// [`start`](Self::start) with the code started as `launch` says; its memory size and
    /// handler (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, `_HANDLER`) are the template's.
    pub async fn start_with(
        launch: &Launch,
        stack: &crate::LocalStack,
        name: &str,
    ) -> Result<Self> {
        let template = &stack.template;
        let spec = function(template, name)?;
        let logical_id = spec.logical_id;
        let mut env = standalone_env(template, name, &stack.endpoint, &template.region)?;
        // With IAM on, the function calls AWS as itself, through the checking proxy.
        if let Some((endpoint, key, secret)) = stack.function_credentials(&logical_id) {
            env.retain(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "AWS_ENDPOINT_URL" | "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY"
                )
            });
            env.push(("AWS_ENDPOINT_URL".into(), endpoint));
            env.push(("AWS_ACCESS_KEY_ID".into(), key));
            env.push(("AWS_SECRET_ACCESS_KEY".into(), secret));
        }
        env.push((
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            spec.memory_size.to_string(),
        ));
        if let Some(handler) = spec.handler {
            env.push(("_HANDLER".into(), handler));
        }
        let physical = template.physical_name(&logical_id);
        let arn = template
            .arn(&logical_id)
            .unwrap_or_else(|| physical.clone());
        let mut f = Self::spawn_with(launch, env, &physical, &arn).await?;
        f.timeout = Duration::from_secs(spec.timeout);
        Ok(f)
    }

    /// Starts `binary` with exactly `env` (plus the runtime's variables for a function named
    /// `function_name` with ARN `arn`) against a fresh [`RuntimeApi`].
    pub async fn spawn(
        binary: &Path,
        env: Vec<(String, String)>,
        function_name: &str,
        arn: &str,
    ) -> Result<Self> {
        Self::spawn_with(&Launch::native(binary), env, function_name, arn).await
    }

    /// [`spawn`](Self::spawn) with the code started as `launch` says. The variables Lambda
    /// sets that `env` does not give get Lambda's values (memory 256 MB unless given; that
    /// memory is enforced). With no template, an invocation may run 30 s.
    pub async fn spawn_with(
        launch: &Launch,
        env: Vec<(String, String)>,
        function_name: &str,
        arn: &str,
    ) -> Result<Self> {
        let physical = function_name;
        let memory_mb = env
            .iter()
            .find(|(k, _)| k == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(256);
        let api = RuntimeApi::start(arn).await?;
        let region = env
            .iter()
            .find(|(k, _)| k == "AWS_REGION")
            .map(|(_, v)| v.clone());
        let mut command = tokio::process::Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            // Lambda's defaults for an OS-only runtime (provided.al2023), which `env` may
            // override where Lambda lets the configuration do so.
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("LANG", "en_US.UTF-8")
            .env("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin")
            .env("TZ", ":UTC")
            .env("LAMBDA_RUNTIME_DIR", "/var/runtime")
            .envs(env)
            // Credentials and region are given: never ask an instance metadata service.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", physical)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{physical}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(region) = region {
            command.env("AWS_DEFAULT_REGION", region);
        }
        if let Some(dir) = &launch.task_root {
            command.current_dir(dir).env("LAMBDA_TASK_ROOT", dir);
        }
        if let Some((uid, gid)) = launch.user {
            command.uid(uid).gid(gid);
        }
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.program.display()))?;
        let stdout = collect_lines(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let stderr = collect_lines(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
        Ok(Self {
            api,
            spawned,
            child,
            stdout,
            stderr,
            timeout: UNTEMPLATED_TIMEOUT,
            memory_mb,
        })
    }

    /// Waits up to `timeout` for the function's init to end (its first poll for an
    /// invocation): how long it took from the process's start. Fails with its stderr as soon
    /// as the process exits instead.
    pub async fn init_duration(&mut self, timeout: Duration) -> Result<Duration> {
        let exited = tokio::select! {
            polled = self.api.first_poll(timeout) => return Ok(polled? - self.spawned),
            status = self.child.wait() => status?,
        };
        // The readers drain the pipes after the exit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        bail!(
            "the function exited during its init ({exited}): {}",
            self.stderr().join("\n")
        )
    }

    /// Invokes the function with `payload` (and `trace` as the invocation's X-Ray header)
    /// within its `Timeout` ([`RuntimeApi::invoke`]). A function past it, or past its
    /// `MemorySize`, is stopped (a later invocation fails: start a new process, as Lambda
    /// starts a new environment) and answered with Lambda's error (`Sandbox.Timedout`,
    /// `Runtime.OutOfMemory`). Fails with the function's stderr when the process has exited.
    pub async fn invoke(&mut self, payload: &Value, trace: Option<&str>) -> Result<Answer> {
        let pid = self.child.id();
        let limit_kb = self.memory_mb * 1024;
        let over_memory = move || pid.and_then(peak_rss_kb).is_some_and(|kb| kb > limit_kb);
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if over_memory() {
                    return;
                }
            }
        };
        let answer = tokio::select! {
            answer = self.api.invoke(payload, trace, self.timeout) => Some(answer),
            () = watch => None,
        };
        // The peak is kept by the kernel: one between two samples is caught here.
        let answer = match answer {
            Some(answer) if !over_memory() => answer,
            _ => {
                let _ = self.child.start_kill();
                return Ok(Answer::Error(serde_json::json!({
                    "errorType": "Runtime.OutOfMemory",
                    "errorMessage": format!(
                        "Runtime exited with error: signal: killed (peak resident memory over the function's MemorySize, {} MB)",
                        self.memory_mb
                    ),
                })));
            }
        };
        if let Ok(Answer::Error(e)) = &answer
            && e["errorType"] == "Sandbox.Timedout"
        {
            let _ = self.child.start_kill();
        }
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

    /// The process's peak resident memory so far, in MB (`VmHWM`), when the platform tells.
    pub fn peak_memory_mb(&self) -> Option<u64> {
        self.child.id().and_then(peak_rss_kb).map(|kb| kb / 1024)
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
        lock(&self.stdout).clone()
    }

    /// The lines it printed on stdout once they stop coming (no new line for 200 ms, at most
    /// 10 s): what an invocation printed after its answer (its EMF metrics, written just
    /// before the answer, travel through a pipe the answer does not wait for).
    pub async fn stdout_settled(&self) -> Vec<String> {
        let quiet = Duration::from_millis(200);
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut seen = lock(&self.stdout).len();
        let mut since = Instant::now();
        while Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = lock(&self.stdout).len();
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        self.stdout()
    }

    /// The lines it printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// Waits up to `timeout` for the process to exit by itself (a function that cannot start).
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// The peak resident set size of process `pid` in kB: `VmHWM` in `/proc/<pid>/status`
/// (Linux; `None` elsewhere or once the process is gone).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Starts `binary` as the function `name` of the template under `root` with every setting
/// but `missing`, expects it to fail at start, and returns what it printed on stderr.
pub async fn start_without(
    binary: &Path,
    root: &Path,
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

    /// A runtime client in Python: answers `{"held": n}` after sleeping `sleep` seconds and
    /// holding `mb` MB of written (resident) memory.
    const CLIENT: &str = r#"
import json, os, time, urllib.request
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    r = urllib.request.urlopen(base + "next")
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.loads(r.read())
    time.sleep(event.get("sleep", 0))
    held = b"x" * (event.get("mb", 0) * 1024 * 1024)
    body = json.dumps({"held": len(held) // (1024 * 1024)}).encode()
    urllib.request.urlopen(urllib.request.Request(base + rid + "/response", data=body, method="POST"))
"#;

    async fn client(memory_mb: u64) -> FunctionProcess {
        let launch = Launch::command(Path::new("/usr/bin/python3"), ["-c", CLIENT]);
        let env = vec![(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(),
            memory_mb.to_string(),
        )];
        FunctionProcess::spawn_with(
            &launch,
            env,
            "hog",
            "arn:aws:lambda:us-east-1:1:function:hog",
        )
        .await
        .expect("starts")
    }

    #[tokio::test]
    async fn a_function_past_its_memory_size_is_stopped_as_lambda_stops_it() {
        let mut f = client(64).await;
        let fits = f.invoke(&json!({"mb": 8}), None).await.expect("answered");
        assert_eq!(fits, Answer::Response(json!({"held": 8})));
        assert!(
            f.peak_memory_mb().is_some_and(|mb| mb < 64),
            "{:?}",
            f.peak_memory_mb()
        );
        let over = f.invoke(&json!({"mb": 96}), None).await.expect("answered");
        let Answer::Error(error) = over else {
            panic!("out of memory: {over:?}");
        };
        assert_eq!(error["errorType"], "Runtime.OutOfMemory");
        assert!(f.exited(Duration::from_secs(5)).await.is_some(), "stopped");
    }

    #[tokio::test]
    async fn a_function_past_its_timeout_is_timed_out_and_stopped() {
        let mut f = client(128).await;
        f.timeout = Duration::from_millis(500);
        let quick = f.invoke(&json!({}), None).await.expect("answered");
        assert_eq!(quick, Answer::Response(json!({"held": 0})));
        let slow = f
            .invoke(&json!({"sleep": 5}), None)
            .await
            .expect("answered");
        let Answer::Error(error) = slow else {
            panic!("a timeout: {slow:?}");
        };
        assert_eq!(error["errorType"], "Sandbox.Timedout");
        assert!(f.exited(Duration::from_secs(2)).await.is_some(), "stopped");
    }
}
