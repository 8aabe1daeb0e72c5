//! A function's real binary as a child process against a [`RuntimeApi`]: started with the
//! environment Lambda gives it, invoked, and read back (its stdout and stderr lines).

use super::env::{function, request_trace, standalone_env};
use super::{Answer, RuntimeApi, lock};
use crate::template::Template;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::Path;
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
            lock(&sink).push(line);
        }
    });
    lines
}

impl FunctionProcess {
    /// Starts `binary` as the template function `name` of `stack` would run in Lambda: the
    /// [`standalone_env`] only (the process environment is not inherited), the runtime's own
    /// variables, and `AWS_LAMBDA_RUNTIME_API` pointing at a fresh [`RuntimeApi`].
    pub async fn start(binary: &Path, stack: &crate::LocalStack, name: &str) -> Result<Self> {
        let template = &stack.template;
        let logical_id = function(template, name)?.logical_id;
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
        let physical = template.physical_name(&logical_id);
        let arn = template
            .arn(&logical_id)
            .unwrap_or_else(|| physical.clone());
        Self::spawn(binary, env, &physical, &arn).await
    }

    /// Starts `binary` with exactly `env` (plus the runtime's variables for a function named
    /// `function_name` with ARN `arn`) against a fresh [`RuntimeApi`].
    pub async fn spawn(
        binary: &Path,
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
        let spawned = Instant::now();
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
