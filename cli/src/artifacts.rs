//! `eventfold check-artifacts`: the arm64 `bootstrap` binaries we ship, started as Lambda
//! starts them and sent their sample events.
//!
//! Each function's code in the `sam build` output (`.aws-sam/build/<LogicalId>/`) is zipped as
//! `sam deploy` zips it and unzipped as Lambda unpacks it (`scripts/lambda-code.py`: the zip's
//! file modes, nothing writable), then its `bootstrap` runs under `qemu-aarch64-static` from
//! that directory (working directory and `LAMBDA_TASK_ROOT`) with the environment Lambda sets
//! (the template's variables, memory size and handler; function name, region, runtime API,
//! log group, ...; [`FunctionProcess::start_with`]) against the emulated Lambda runtime API
//! and a provisioned local stack, calling AWS with its own function's credentials through the
//! IAM check. Run by root, it runs as `nobody`, so its code is read-only to it as in Lambda.
//! Its sample events ([`scenarios::SCENARIOS`]) must get the answers the x86 runtime tests
//! expect, and each function's init warm-up must succeed. Init time and first-request latency
//! are measured, next to the same figures of native binaries when `--native` names them.

pub mod scenarios;

use anyhow::{Context, Result, anyhow, bail, ensure};
use eventfold_local::LocalStack;
use eventfold_local::runtime_api::{FunctionProcess, Launch, provisioned_stack, warm_ups};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the shipped code is and how to run it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The repository root (its template, samples and `.venv`).
    pub root: PathBuf,
    /// The `sam build` output: `<LogicalId>/bootstrap` per function.
    pub build_dir: PathBuf,
    /// `qemu-aarch64-static` (found on `PATH` when `None`).
    pub qemu: Option<PathBuf>,
    /// The arm64 libraries the dynamically linked bootstrap loads (`qemu -L`).
    pub sysroot: PathBuf,
    /// A directory of native builds of the same functions (`<binary>` each, e.g. the x86_64
    /// debug builds in `$CARGO_TARGET_DIR/debug`), run the same way for comparison.
    pub native: Option<PathBuf>,
    /// How long a function may take to start.
    pub init_timeout: Duration,
}

/// What one function's run measured.
#[derive(Debug, Clone)]
pub struct Run {
    /// The function's logical id.
    pub logical_id: String,
    /// From its start to its first poll for an invocation (Lambda's init phase).
    pub init: Duration,
    /// Its first invocation, from the event queued to the answer.
    pub first_request: Duration,
    /// How many samples it answered.
    pub requests: usize,
}

/// The package `apt-get` installs for what is missing.
const INSTALL: &str = "apt-get install qemu-user-static libc6-arm64-cross libgcc-s1-arm64-cross (scripts/setup installs them)";

/// The user a root caller runs the functions as (Debian's `nobody`).
const NOBODY: (u32, u32) = (65_534, 65_534);

/// `qemu-aarch64-static`: the one given, else the first on `PATH`.
fn qemu(options: &Options) -> Result<PathBuf> {
    if let Some(q) = &options.qemu {
        ensure!(q.is_file(), "{} not found: {INSTALL}", q.display());
        return Ok(q.clone());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("qemu-aarch64-static"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("qemu-aarch64-static is not on PATH: {INSTALL}"))
}

/// Whether `path` is an ELF executable for aarch64 (`e_machine` 183).
fn is_aarch64_elf(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.len() > 20 && bytes.starts_with(b"\x7fELF") && bytes[18..20] == [183, 0])
}

/// A fresh directory every user can enter (the functions may run as `nobody`); removed,
/// read-only contents included, when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "eventfold-artifacts-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        fn writable(dir: &Path) {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    writable(&entry.path());
                }
            }
        }
        writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each function's code as Lambda gets it, under `scratch/code/<LogicalId>/`: the zip's
/// size in bytes, per logical id.
fn unpack(options: &Options, scratch: &Path) -> Result<Vec<(String, u64)>> {
    let python = options.root.join(".venv/bin/python");
    ensure!(
        python.is_file(),
        "{} not found (run scripts/setup)",
        python.display()
    );
    ensure!(
        options.build_dir.is_dir(),
        "{} not found: build the functions first (scripts/build-functions)",
        options.build_dir.display()
    );
    let out = std::process::Command::new(&python)
        .arg(options.root.join("scripts/lambda-code.py"))
        .arg(&options.build_dir)
        .arg(scratch.join("code"))
        .output()
        .context("running scripts/lambda-code.py")?;
    ensure!(
        out.status.success(),
        "scripts/lambda-code.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next().unwrap_or_default().to_owned();
            let size = words
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("lambda-code.py: unexpected line {line}"))?;
            Ok((id, size))
        })
        .collect()
}

/// How `binary` (the template function's) is started in this mode.
enum Mode<'a> {
    /// The unzipped arm64 code under qemu: qemu, the sysroot, the code directories, and the
    /// user to run as.
    Qemu {
        qemu: &'a Path,
        sysroot: &'a Path,
        code: &'a Path,
        user: Option<(u32, u32)>,
    },
    /// The native builds in this directory.
    Native(&'a Path),
}

impl Mode<'_> {
    fn launch(&self, logical_id: &str, binary: &str) -> Launch {
        match self {
            Mode::Qemu {
                qemu,
                sysroot,
                code,
                user,
            } => {
                let dir = code.join(logical_id);
                let launch = Launch::command(
                    qemu,
                    [
                        "-L".into(),
                        sysroot.as_os_str().to_owned(),
                        dir.join("bootstrap").into_os_string(),
                    ],
                )
                .task_root(&dir);
                match user {
                    Some((uid, gid)) => launch.user(*uid, *gid),
                    None => launch,
                }
            }
            Mode::Native(dir) => Launch::native(&dir.join(binary)),
        }
    }
}

/// Runs every scenario against a fresh provisioned stack, each function started as `mode`
/// says; stops at the first wrong answer.
async fn run_all(options: &Options, mode: &Mode<'_>) -> Result<Vec<Run>> {
    let stack = provisioned_stack(&options.root).await?;
    let result = run_on(options, &stack, mode).await;
    stack.stop().await;
    result
}

async fn run_on(options: &Options, stack: &LocalStack, mode: &Mode<'_>) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for (binary, steps) in scenarios::SCENARIOS {
        let spec = stack
            .template
            .function(binary)
            .ok_or_else(|| anyhow!("the template has no function {binary}"))?;
        let launch = mode.launch(&spec.logical_id, binary);
        let mut f = FunctionProcess::start_with(&launch, stack, binary).await?;
        let run = run_one(options, stack, &mut f, binary, steps).await;
        let run = run.map_err(|e| {
            let stderr = f.stderr();
            let tail = &stderr[stderr.len().saturating_sub(20)..];
            anyhow!(
                "{binary} ({}): {e:#}\n  its stderr:\n{}",
                spec.logical_id,
                tail.join("\n")
            )
        })?;
        runs.push(Run {
            logical_id: spec.logical_id,
            ..run
        });
    }
    Ok(runs)
}

async fn run_one(
    options: &Options,
    stack: &LocalStack,
    f: &mut FunctionProcess,
    binary: &str,
    steps: &[scenarios::Step],
) -> Result<Run> {
    let init = f.init_duration(options.init_timeout).await?;
    let mut first_request = None;
    for step in steps {
        let event = scenarios::event(&options.root, stack, binary, step)?;
        let trace = eventfold_local::runtime_api::request_trace(&event).map(str::to_owned);
        let t0 = Instant::now();
        let answer = f.invoke(&event, trace.as_deref()).await?;
        first_request.get_or_insert(t0.elapsed());
        let answer = answer
            .response()
            .with_context(|| format!("sample {}", step.sample))?;
        scenarios::check(&step.expect, &answer)
            .with_context(|| format!("sample {}", step.sample))?;
    }
    let warmed = warm_ups(&f.stdout());
    ensure!(!warmed.is_empty(), "its init warmed no endpoint");
    if let Some((endpoint, Some(error))) = warmed.iter().find(|(_, e)| e.is_some()) {
        bail!("its init's warm-up of {endpoint} failed: {error}");
    }
    Ok(Run {
        logical_id: String::new(),
        init,
        first_request: first_request.unwrap_or_default(),
        requests: steps.len(),
    })
}

/// Checks every function of the template: its shipped arm64 code under qemu (and the native
/// builds, when given), and prints the table of init and first-request times.
pub async fn check(options: &Options) -> Result<()> {
    let started = Instant::now();
    let qemu = qemu(options)?;
    for lib in ["ld-linux-aarch64.so.1", "libc.so.6", "libgcc_s.so.1"] {
        let path = options.sysroot.join("lib").join(lib);
        ensure!(path.is_file(), "{} not found: {INSTALL}", path.display());
    }
    let scratch = Scratch::new()?;
    let sizes = unpack(options, &scratch.0)?;
    let code = scratch.0.join("code");
    let template = eventfold_local::Template::load(
        &options.root.join(eventfold_local::stack::TEMPLATE_PATH),
        "eventfold-local",
        "us-east-1",
    )?;
    let functions = template.functions();
    for f in &functions {
        let bootstrap = code.join(&f.logical_id).join("bootstrap");
        ensure!(
            bootstrap.is_file(),
            "{}: no bootstrap in {} (build the functions: scripts/build-functions)",
            f.logical_id,
            options.build_dir.join(&f.logical_id).display()
        );
        ensure!(
            is_aarch64_elf(&bootstrap)?,
            "{} is not an aarch64 executable",
            bootstrap.display()
        );
        ensure!(
            scenarios::SCENARIOS.iter().any(|(b, _)| *b == f.binary),
            "{} ({}) has no scenario in cli/src/artifacts/scenarios.rs",
            f.logical_id,
            f.binary
        );
    }
    // Run by root, the function runs as nobody: its read-only code is then read-only to it.
    let user = (std::fs::metadata(&scratch.0)?.uid() == 0).then_some(NOBODY);
    let native = match &options.native {
        Some(dir) => {
            for f in &functions {
                let binary = dir.join(&f.binary);
                ensure!(binary.is_file(), "no native build {}", binary.display());
            }
            Some(run_all(options, &Mode::Native(dir)).await?)
        }
        None => None,
    };
    let emulated = Mode::Qemu {
        qemu: &qemu,
        sysroot: &options.sysroot,
        code: &code,
        user,
    };
    let runs = run_all(options, &emulated).await?;
    print!(
        "{}",
        table(&runs, native.as_deref(), &sizes, options.native.as_deref())
    );
    println!(
        "check-artifacts: {} arm64 functions started under qemu and answered their samples as expected ({}; {:.1} s)",
        runs.len(),
        match user {
            Some(_) => "as nobody, code read-only",
            None => "as this user",
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The table of figures: per function, its zip, its requests, init and first request under
/// qemu and natively.
fn table(
    runs: &[Run],
    native: Option<&[Run]>,
    sizes: &[(String, u64)],
    native_dir: Option<&Path>,
) -> String {
    let mut out = String::new();
    if let Some(dir) = native_dir {
        out.push_str(&format!("native: {}\n", dir.display()));
    }
    out.push_str(&format!(
        "{:<26} {:>8} {:>8} {:>11} {:>11} {:>13} {:>13}\n",
        "function", "zip KB", "requests", "init qemu", "init native", "first qemu", "first native"
    ));
    for run in runs {
        let size = sizes
            .iter()
            .find(|(id, _)| *id == run.logical_id)
            .map_or(0, |(_, s)| s / 1024);
        let theirs = native.and_then(|n| n.iter().find(|r| r.logical_id == run.logical_id));
        let or_dash = |d: Option<Duration>| d.map_or("-".to_owned(), ms);
        out.push_str(&format!(
            "{:<26} {:>8} {:>8} {:>11} {:>11} {:>13} {:>13}\n",
            run.logical_id,
            size,
            run.requests,
            ms(run.init),
            or_dash(theirs.map(|r| r.init)),
            ms(run.first_request),
            or_dash(theirs.map(|r| r.first_request)),
        ));
    }
    out
}
