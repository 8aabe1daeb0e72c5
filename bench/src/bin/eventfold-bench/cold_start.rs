//! `eventfold-bench cold-start`: a freshly started function's init and first-request
//! latency, with the init-time warm-up (`eventfold_aws::warmup`) and without it
//! (`EVENTFOLD_WARM_UP=off`). Printed, never asserted.
//!
//! Each run starts the function's real binary (built next to this one, `cargo build
//! --release -p bench -p command-api -p query-api -p stream-publisher`, or found in
//! `EVENTFOLD_BIN_DIR` to compare builds) against the emulated Lambda runtime API and the
//! template's resources on a private emulator, as `functions/*/tests/runtime.rs` do, and
//! hands it a sample event at once after its init: Lambda's cold start, minus the
//! sandbox's own set-up.
//!
//! Over the emulator's plain HTTP a connection costs next to nothing, so the runs are made
//! twice: over HTTP, and over HTTPS (the emulator's second listener, a certificate made for
//! the run with `openssl` and trusted through `SSL_CERT_FILE`), where the first request
//! pays the TLS handshake and the certificate load as it does in AWS (less the network's
//! round trips, which make the real difference larger).

use anyhow::{Context, Result, bail};
use eventfold_local::runtime_api::{FunctionProcess, provisioned_stack_at, standalone_env};
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The emulator with an HTTPS listener beside its HTTP one; killed when dropped.
struct TlsEmulator {
    child: Child,
    http: String,
    https: String,
    ca_file: PathBuf,
    _dir: TempDir,
}

impl Drop for TlsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TlsEmulator {
    fn start(root: &Path) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("eventfold-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        let dir = TempDir(dir);
        // A CA the functions trust, and the emulator's certificate signed by it (rustls
        // refuses a CA certificate presented as the server's own).
        let file = |name: &str| dir.0.join(name);
        std::fs::write(
            file("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        let new_key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<std::ffi::OsString>; 3] = [
            args(&[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=eventfold bench CA",
            ])
            .chain(args(&new_key))
            .chain(paths(&[
                ("-keyout", file("ca.key")),
                ("-out", file("ca.pem")),
            ]))
            .collect(),
            args(&["req", "-subj", "/CN=127.0.0.1"])
                .chain(args(&new_key))
                .chain(paths(&[
                    ("-keyout", file("key.pem")),
                    ("-out", file("leaf.csr")),
                ]))
                .collect(),
            args(&["x509", "-req", "-days", "1", "-CAcreateserial"])
                .chain(paths(&[
                    ("-in", file("leaf.csr")),
                    ("-CA", file("ca.pem")),
                    ("-CAkey", file("ca.key")),
                    ("-extfile", file("leaf.ext")),
                    ("-out", file("cert.pem")),
                ]))
                .collect(),
        ];
        for step in steps {
            let made = Command::new("openssl")
                .args(&step)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("running openssl (for the HTTPS runs)")?;
            if !made.success() {
                bail!("openssl {step:?}: {made}");
            }
        }
        let (cert, key) = (file("cert.pem"), file("key.pem"));
        let python = std::env::var_os("EVENTFOLD_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        let mut child = Command::new(&python)
            .arg(root.join("scripts/moto_server.py"))
            .args(["--port", "0", "--tls-port", "0", "--watch-stdin"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut http, mut https) = (None, None);
        while http.is_none() || https.is_none() {
            let line = lines
                .next()
                .context("the emulator exited before it was ready")??;
            if let Some(p) = line.strip_prefix("READY_TLS ") {
                https = Some(format!("https://127.0.0.1:{}", p.trim()));
            } else if let Some(p) = line.strip_prefix("READY ") {
                http = Some(format!("http://127.0.0.1:{}", p.trim()));
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            http: http.unwrap_or_default(),
            https: https.unwrap_or_default(),
            ca_file: file("ca.pem"),
            _dir: dir,
        })
    }
}

/// One function to start: its binary, its sample event, and how to make each run's
/// request new (a command that would be refused the second time gets a fresh id).
struct Subject {
    binary: &'static str,
    sample: &'static str,
    fresh: Option<&'static str>,
}

const SUBJECTS: &[Subject] = &[
    Subject {
        binary: "command-api",
        sample: "create-order",
        fresh: Some("o-1001"),
    },
    Subject {
        binary: "query-api",
        sample: "order-summary",
        fresh: None,
    },
    Subject {
        binary: "stream-publisher",
        sample: "insert",
        fresh: None,
    },
];

#[derive(Default)]
struct Samples {
    init: Vec<Duration>,
    first: Vec<Duration>,
    second: Vec<Duration>,
}

fn median(values: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

fn sample(root: &Path, subject: &Subject, run: usize, request: usize) -> Result<Value> {
    let path = root
        .join("functions")
        .join(subject.binary)
        .join("events")
        .join(format!("{}.json", subject.sample));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let text = match subject.fresh {
        Some(id) => text.replace(id, &format!("{id}-cold-{run}-{request}")),
        None => text,
    };
    Ok(serde_json::from_str(&text)?)
}

fn args<'a>(list: &'a [&'a str]) -> impl Iterator<Item = std::ffi::OsString> + 'a {
    list.iter().map(std::ffi::OsString::from)
}

fn paths(list: &[(&str, PathBuf)]) -> impl Iterator<Item = std::ffi::OsString> {
    list.iter()
        .flat_map(|(flag, path)| {
            [
                std::ffi::OsString::from(flag),
                path.clone().into_os_string(),
            ]
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// Whether `answer` is a success: an HTTP answer below 500 (the samples' requests may be
/// refused by state: a 404 still read the table), a batch answer with no failed item.
fn check(binary: &str, answer: &Value) -> Result<()> {
    let failed = match answer.get("statusCode").and_then(Value::as_u64) {
        Some(status) => status >= 500,
        None => answer["batchItemFailures"]
            .as_array()
            .is_none_or(|f| !f.is_empty()),
    };
    if failed {
        bail!("{binary} failed its request: {answer}");
    }
    Ok(())
}

/// Starts `subject` once (warm-up on or off) and times its init and two requests.
/// Where a run happens: the stack, the HTTPS listener (if over TLS), the repository root,
/// the binaries' directory and the function.
type RunAt<'a> = (
    &'a eventfold_local::LocalStack,
    Option<&'a TlsEmulator>,
    &'a Path,
    &'a Path,
    &'a Subject,
);

async fn one_run(
    (stack, tls, root, bin_dir, subject): RunAt<'_>,
    warm_up: bool,
    run: usize,
    samples: &mut Samples,
) -> Result<()> {
    let region = stack
        .sdk
        .region()
        .map_or("us-east-1".to_owned(), ToString::to_string);
    let endpoint = tls.map_or(stack.endpoint.as_str(), |t| t.https.as_str());
    let mut env = standalone_env(&stack.template, subject.binary, endpoint, &region)?;
    if let Some(t) = tls {
        // rustls-native-certs reads the trusted certificates from here instead.
        env.push(("SSL_CERT_FILE".into(), t.ca_file.display().to_string()));
    }
    env.push((
        "EVENTFOLD_WARM_UP".into(),
        if warm_up { "on" } else { "off" }.into(),
    ));
    let binary = bin_dir.join(subject.binary);
    let mut f = FunctionProcess::spawn(&binary, env, subject.binary, subject.binary).await?;
    samples
        .init
        .push(f.init_duration(Duration::from_secs(20)).await?);
    for (i, into) in [&mut samples.first, &mut samples.second]
        .into_iter()
        .enumerate()
    {
        let event = sample(root, subject, run, i)?;
        let trace = eventfold_local::runtime_api::request_trace(&event).map(str::to_owned);
        let started = std::time::Instant::now();
        let answer = f.invoke(&event, trace.as_deref()).await?;
        into.push(started.elapsed());
        check(subject.binary, &answer.response()?)?;
    }
    Ok(())
}

/// Runs `runs` cold starts of each function with and without warm-up, alternating, and
/// prints the medians.
pub async fn run(root: PathBuf, runs: usize) -> Result<()> {
    // `EVENTFOLD_BIN_DIR`: binaries built elsewhere (another profile's target dir).
    let bin_dir = match std::env::var_os("EVENTFOLD_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .parent()
            .context("the binary's directory")?
            .to_path_buf(),
    };
    for subject in SUBJECTS {
        if !bin_dir.join(subject.binary).exists() {
            bail!(
                "{} is not built next to this binary ({}): cargo build --release -p bench -p command-api -p query-api -p stream-publisher",
                subject.binary,
                bin_dir.display()
            );
        }
    }
    let emulator = TlsEmulator::start(&root)?;
    let stack = provisioned_stack_at(&root, Some(emulator.http.clone())).await?;
    println!("eventfold bench cold-start ({runs} starts each, medians, the local emulator)");
    println!("-----------------------------------------------------------------------------");
    let mut run = 0;
    for (scheme, tls) in [("http ", None), ("https", Some(&emulator))] {
        for subject in SUBJECTS {
            let mut with = Samples::default();
            let mut without = Samples::default();
            for _ in 0..runs {
                let args = (&stack, tls, root.as_path(), bin_dir.as_path(), subject);
                one_run(args, true, run, &mut with).await?;
                one_run(args, false, run + 1, &mut without).await?;
                run += 2;
            }
            for (label, s) in [("warm-up on ", &with), ("warm-up off", &without)] {
                let init_and_first: Vec<Duration> =
                    s.init.iter().zip(&s.first).map(|(a, b)| *a + *b).collect();
                println!(
                    "{scheme} {:<17} {label}: init {:>6.1} ms, first request {:>6.1} ms, second {:>5.1} ms, init + first {:>6.1} ms",
                    subject.binary,
                    median(&s.init),
                    median(&s.first),
                    median(&s.second),
                    median(&init_and_first),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(&ms(&[3, 1, 2])), 2.0);
        assert_eq!(median(&ms(&[4, 1, 3, 2])), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn commands_get_a_fresh_id_per_request() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let a = sample(&root, &SUBJECTS[0], 1, 0).expect("sample");
        let b = sample(&root, &SUBJECTS[0], 1, 1).expect("sample");
        assert_ne!(a, b);
        assert!(a.to_string().contains("o-1001-cold-1-0"), "{a}");
    }
}
