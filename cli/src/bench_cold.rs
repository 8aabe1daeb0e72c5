//! `eventfold bench cold-start`: a freshly started function's init and first-request
//! latency, with the init-time warm-up (`eventfold_aws::warmup`) and without it
//! (`EVENTFOLD_WARM_UP=off`). Printed, never asserted.
//!
//! Each run starts the function's real binary (built next to this one, `cargo build
//! --release -p cli -p command-api -p query-api -p stream-publisher`, or found in
//! `EVENTFOLD_BIN_DIR` to compare builds) against the emulated Lambda runtime API and the
//! template's resources on a private emulator, as `functions/*/tests/runtime.rs` do, and
//! hands it a sample event at once after its init: Lambda's cold start, minus the
//! sandbox's own set-up.

use anyhow::{Context, Result, bail};
use eventfold_local::runtime_api::{FunctionProcess, provisioned_stack, standalone_env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Starts `subject` once (warm-up on or off) and times its init and two requests.
async fn one_run(
    stack: &eventfold_local::LocalStack,
    root: &Path,
    bin_dir: &Path,
    subject: &Subject,
    warm_up: bool,
    run: usize,
    samples: &mut Samples,
) -> Result<()> {
    let region = stack
        .sdk
        .region()
        .map_or("us-east-1".to_owned(), ToString::to_string);
    let mut env = standalone_env(&stack.template, subject.binary, &stack.endpoint, &region)?;
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
        if let eventfold_local::runtime_api::Answer::Error(e) = answer {
            bail!("{} answered an error: {e}", subject.binary);
        }
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
                "{} is not built next to this binary ({}): cargo build --release -p cli -p command-api -p query-api -p stream-publisher",
                subject.binary,
                bin_dir.display()
            );
        }
    }
    let stack = provisioned_stack(&root).await?;
    println!(
        "eventfold bench cold-start ({runs} starts each, medians, local emulator over plain HTTP)"
    );
    println!(
        "--------------------------------------------------------------------------------------"
    );
    for subject in SUBJECTS {
        let mut with = Samples::default();
        let mut without = Samples::default();
        for run in 0..runs {
            one_run(&stack, &root, &bin_dir, subject, true, run * 2, &mut with).await?;
            one_run(
                &stack,
                &root,
                &bin_dir,
                subject,
                false,
                run * 2 + 1,
                &mut without,
            )
            .await?;
        }
        for (label, s) in [("warm-up on ", &with), ("warm-up off", &without)] {
            println!(
                "{:<17} {label}: init {:>7.1} ms, first request {:>7.1} ms, second {:>6.1} ms, init + first {:>7.1} ms",
                subject.binary,
                median(&s.init),
                median(&s.first),
                median(&s.second),
                median(
                    &s.init
                        .iter()
                        .zip(&s.first)
                        .map(|(a, b)| *a + *b)
                        .collect::<Vec<_>>()
                ),
            );
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
