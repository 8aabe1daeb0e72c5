//! The local AWS emulator: moto, served one request at a time by `scripts/moto_server.py`.

use anyhow::{Context, Result, anyhow, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running moto server, killed when dropped. It also exits by itself when its stdin
/// closes, so a parent that dies (a test binary, `eventfold local`) leaves no orphan.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
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
        Ok(Self {
            child,
            endpoint: format!("http://127.0.0.1:{ready}"),
        })
    }

    /// [`Self::start_blocking`] off the async runtime's worker threads.
    pub async fn start(root: &Path, port: u16) -> Result<Self> {
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || Self::start_blocking(&root, port)).await?
    }

    /// Stops the emulator.
    pub async fn stop(self) {
        drop(self);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
