//! The local AWS emulator: moto, served one request at a time by `scripts/moto_server.py`.

use anyhow::{Context, Result, anyhow, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running moto server; killed when dropped (and it exits by itself when we die).
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
        .find(|p| p.join("infra/template.yaml").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("no infra/template.yaml above {}", start.display()))
}

impl Emulator {
    /// Starts moto on `port` (0: any free port) with the project's `.venv` python.
    pub async fn start(root: &Path, port: u16) -> Result<Self> {
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
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(p) = line.strip_prefix("READY ") {
                    return Ok::<_, anyhow::Error>(p.trim().parse::<u16>()?);
                }
            }
            bail!("moto exited before it was ready")
        })
        .await
        .context("moto did not start within 60 s")??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            endpoint: format!("http://127.0.0.1:{ready}"),
        })
    }

    /// Stops the emulator.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
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
