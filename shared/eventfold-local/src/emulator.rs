//! The local AWS emulator: moto, served one request at a time by `scripts/moto_server.py`,
//! in two processes behind one endpoint.
//!
//! moto runs a request at a time (see `moto_server.py`: stock moto is not linearizable), so
//! one process uses one core. Two processes, each serialized, use two: one serves SNS and
//! SQS (together, because moto delivers a topic's messages to its queue subscriptions inside
//! the process), the other everything else (DynamoDB with its streams, CloudFormation, KMS,
//! CloudWatch, STS). Each service lives in exactly one process, so each stays linearizable.
//! A router on the public port sends a request to the process of the service its signature
//! names (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`); an unsigned request goes to
//! the first. `EVENTFOLD_EMULATOR_PROCESSES=1` runs one process, as before.

use anyhow::{Context, Result, anyhow, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running emulator (its moto processes and router), stopped when dropped. A moto
/// process also exits by itself when its stdin closes, so a parent that dies (a test
/// binary, `eventfold local`) leaves no orphan.
#[derive(Debug)]
pub struct Emulator {
    /// Each moto process, with what it serves.
    children: Vec<(&'static str, Child)>,
    /// Stops the router (when there is one).
    router: Option<tokio::sync::oneshot::Sender<()>>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// Services the second process serves (signing names).
pub const QUEUE_SERVICES: &[&str] = &["sns", "sqs"];

/// Whether the emulator runs in two processes (`EVENTFOLD_EMULATOR_PROCESSES`, default 2).
fn split() -> bool {
    std::env::var("EVENTFOLD_EMULATOR_PROCESSES").map_or(true, |v| v.trim() != "1")
}

/// The repository root: the nearest ancestor of `start` holding `infra/template.yaml`.
pub fn find_root(start: &Path) -> Result<PathBuf> {
    start
        .ancestors()
        .find(|p| p.join(crate::stack::TEMPLATE_PATH).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("no infra/template.yaml above {}", start.display()))
}

impl Emulator {
    /// Starts moto on `port` (0: any free port) with the project's `.venv` python and waits
    /// until it listens. Blocking and runtime-free, so test harnesses shared by many tokio
    /// runtimes can hold one.
    pub fn start_blocking(root: &Path, port: u16) -> Result<Self> {
        if !split() {
            let (child, ready) = spawn_moto(root, port)?;
            return Ok(Self {
                children: vec![("all", child)],
                router: None,
                endpoint: format!("http://127.0.0.1:{ready}"),
            });
        }
        let (first, first_port) = spawn_moto(root, 0)?;
        let (second, second_port) = spawn_moto(root, 0)?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding the emulator's port {port}"))?;
        listener.set_nonblocking(true)?;
        let ready = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let upstreams = [
            format!("http://127.0.0.1:{first_port}"),
            format!("http://127.0.0.1:{second_port}"),
        ];
        std::thread::Builder::new()
            .name("emulator-router".into())
            .spawn(move || route(listener, upstreams, stopped))?;
        Ok(Self {
            children: vec![("dynamodb and the rest", first), ("sns+sqs", second)],
            router: Some(stop),
            endpoint: format!("http://127.0.0.1:{ready}"),
        })
    }

    /// [`Self::start_blocking`] off the async runtime's worker threads.
    pub async fn start(root: &Path, port: u16) -> Result<Self> {
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || Self::start_blocking(&root, port)).await?
    }

    /// The CPU time each moto process has used so far, with what it serves: where a
    /// burst's time goes when the emulator is the bottleneck. Empty where `/proc` is not
    /// there to read it (not Linux).
    pub fn cpu(&self) -> Vec<(&'static str, std::time::Duration)> {
        self.children
            .iter()
            .filter_map(|(serves, child)| Some((*serves, process_cpu(child.id())?)))
            .collect()
    }

    /// Stops the emulator.
    pub async fn stop(self) {
        drop(self);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.router.take() {
            let _ = stop.send(());
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User plus system CPU time of process `pid` (all its threads), from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime), in clock ticks; Linux reports them in
    // USER_HZ, which is 100 on every architecture it exposes to user space.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10))
}

/// Starts one moto process on `port` (0: any free port) with the project's `.venv` python;
/// returns it and the port it listens on, once it does.
fn spawn_moto(root: &Path, port: u16) -> Result<(Child, u16)> {
    let python = std::env::var_os("EVENTFOLD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if !python.exists() {
        bail!(
            "the emulator needs {} with moto installed: run ./scripts/setup (or ./scripts/dev) first",
            python.display()
        );
    }
    let mut child = Command::new(&python)
        .arg(root.join("scripts/moto_server.py"))
        .args(["--port", &port.to_string(), "--watch-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let ready = loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            let _ = child.kill();
            bail!("moto exited before it was ready");
        }
        if let Some(p) = line.strip_prefix("READY ") {
            break p.trim().parse::<u16>()?;
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Ok((child, ready))
}

/// The process (index into the upstreams) that serves a request with `authorization`.
pub fn process_of(authorization: Option<&str>) -> usize {
    let service = authorization
        .and_then(eventfold_iam::classify::credential)
        .map(|(_, s)| s);
    usize::from(service.is_some_and(|s| QUEUE_SERVICES.contains(&s)))
}

/// Runs the router on its own thread and runtime (the emulator is started outside any
/// runtime) until `stopped` fires.
fn route(
    listener: std::net::TcpListener,
    upstreams: [String; 2],
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("emulator-router")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the emulator's router has no runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            tracing::error!("the emulator's router cannot listen");
            return;
        };
        let client = crate::serve::relay_client();
        let upstreams = std::sync::Arc::new(upstreams);
        let handle = move |req: hyper::Request<hyper::body::Incoming>, _peer| {
            let (client, upstreams) = (client.clone(), upstreams.clone());
            async move {
                use http_body_util::BodyExt;
                let (parts, body) = req.into_parts();
                let body = match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return crate::serve::response(400, format!("reading the request: {e}"));
                    }
                };
                let auth = parts
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let upstream = &upstreams[process_of(auth)];
                crate::serve::relay(&client, upstream, parts, body, "eventfold emulator").await
            }
        };
        tokio::select! {
            served = crate::serve::serve(listener, handle) => {
                if let Err(e) = served {
                    tracing::error!(error = %e, "the emulator's router stopped accepting");
                }
            }
            _ = stopped => {}
        }
    });
}

/// The region a local stack is named in when nothing asks for one: `AWS_REGION`, else
/// `AWS_DEFAULT_REGION`, else `us-east-1` (what [`local_sdk_config`] falls back to).
pub fn local_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned())
}

/// SDK configuration for a local endpoint: region and dummy credentials unless the
/// environment provides real ones.
pub async fn local_sdk_config(endpoint: &str) -> SdkConfig {
    let base = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint);
    let base = if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        base.region(Region::new("us-east-1"))
    } else {
        base
    };
    let base = if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        base.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "eventfold-local",
        ))
    } else {
        base
    };
    base.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_time_is_read_and_grows_with_work() {
        let before = process_cpu(std::process::id()).expect("this process's /proc/PID/stat");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(120) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu(std::process::id()).expect("read again");
        assert!(
            after >= before + std::time::Duration::from_millis(50),
            "{before:?} -> {after:?}"
        );
        assert_eq!(process_cpu(u32::MAX), None);
    }

    #[test]
    fn sns_and_sqs_go_to_the_second_process_everything_else_to_the_first() {
        let signed = |service: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
            )
        };
        assert_eq!(process_of(Some(&signed("sqs"))), 1);
        assert_eq!(process_of(Some(&signed("sns"))), 1);
        for service in ["dynamodb", "kms", "monitoring", "cloudformation", "sts"] {
            assert_eq!(process_of(Some(&signed(service))), 0, "{service}");
        }
        assert_eq!(process_of(None), 0);
        assert_eq!(process_of(Some("garbage")), 0);
    }
}
