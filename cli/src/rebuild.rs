//! `eventfold projections rebuild <view> [--verify] [--promote]`: the command-line front of
//! the rebuild (`console::rebuild`, shared with the console): progress on stderr, the
//! outcome on stdout.
//!
//! Without `--promote` the events table is replayed into a shadow copy `<view>@rebuild`
//! (resumable) and, with `--verify`, compared with the live view. With `--promote` the
//! rebuild goes into a new version of the view while the live one keeps serving, is verified
//! against it, becomes live in one conditional write of the view's pointer, and the old
//! version is retired (its documents deleted) after the grace period
//! ([`console::rebuild::versions`]).

pub use console::rebuild::*;

use aws_sdk_dynamodb::Client;
use eventfold_consumers::projection::ReadModelStore;

/// Runs `eventfold projections rebuild`: prints progress and differences; returns whether
/// the rebuilt view equals the live one (always true without `verify`).
pub async fn run(target: &RebuildTarget, view: &str, verify: bool) -> Result<bool, RebuildError> {
    let stored = stored_view(view)?;
    let category =
        category_of(stored).ok_or_else(|| RebuildError::NoCategory(stored.to_owned()))?;
    let shadow = format!("{stored}{SHADOW_SUFFIX}");
    let client = Client::new(&target.sdk);
    let events = target.events();
    let models = eventfold_aws::read_models::DynamoReadModelStore::from_sdk(
        &target.sdk,
        &target.read_models_table,
    );
    let projector = projector_for(events, models, stored, &shadow);
    eprintln!(
        "scanning {} for {category} streams ...",
        target.events_table
    );
    let heads = stream_heads(&client, &target.events_table).await?;
    let report = rebuild(&projector, &category, &heads, |done, total| {
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        eprint!(
            "\r[{}{}] {done}/{total} streams",
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
    })
    .await?;
    eprintln!();
    println!(
        "rebuilt {shadow}: {} streams ({} already done), {} events read, {} tenants",
        report.streams,
        report.already_done,
        report.events_read,
        report.tenants.len()
    );
    if !verify {
        return Ok(true);
    }
    // Compared with the version queries read (the view's own name until a promote).
    let live = projector
        .models()
        .pointer(stored)
        .await
        .map_err(|source| RebuildError::Store {
            view: stored.to_owned(),
            source,
        })?;
    let live = eventfold_consumers::projection::stored_name(stored, live.live);
    let diffs = differences(projector.models(), &report.tenants, &live, &shadow).await?;
    if diffs.is_empty() {
        println!("verify: {stored} equals its rebuild");
        Ok(true)
    } else {
        println!(
            "verify: {} difference(s) between {stored} and {shadow}:",
            diffs.len()
        );
        for d in &diffs {
            println!("  {d}");
        }
        Ok(false)
    }
}

/// What `--promote` waits, by default, before retiring the old version: longer than a query
/// can take (the functions' timeout is 10 s), so no request that read the pointer before the
/// flip still reads the old version when it goes.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `eventfold projections rebuild VIEW --promote`: builds a new version next to the live
/// one, verifies it, promotes it and retires the old one after `grace`, printing each step.
/// Returns false (and abandons the new version) when it differs from the live one.
pub async fn run_promote(
    target: &RebuildTarget,
    view: &str,
    grace: std::time::Duration,
    by: &str,
) -> Result<bool, RebuildError> {
    use console::rebuild::versions::{Flow, Stage};
    let flow = Flow::new(target.clone(), view, by)?;
    let stored = flow.view();
    let built = flow
        .build(|stage| match stage {
            Stage::Scanning { version } => eprintln!(
                "registered {stored} v{version} (building: the projector keeps it current from now on); scanning {} ...",
                target.events_table
            ),
            Stage::Replaying {
                version,
                done,
                total,
            } => {
                let width = 30;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                eprint!(
                    "\r[{}{}] {done}/{total} streams into v{version}",
                    "#".repeat(filled),
                    " ".repeat(width - filled)
                );
            }
            Stage::Verifying { version } => {
                eprintln!();
                eprintln!("verifying v{version} against the live version ...");
            }
        })
        .await?;
    let (live, version) = (built.live, built.version);
    println!(
        "rebuilt {stored} v{version}: {} streams ({} already current), {} events read, {} tenants",
        built.report.streams,
        built.report.already_done,
        built.report.events_read,
        built.report.tenants.len()
    );
    if !built.diffs.is_empty() {
        println!(
            "verify: {} difference(s) between v{live} and v{version}:",
            built.diffs.len()
        );
        for d in &built.diffs {
            println!("  {d}");
        }
        let dropped = flow.abandon(version).await?;
        println!("abandoned v{version} ({dropped} items deleted); v{live} stays live");
        return Ok(false);
    }
    println!("verify: v{version} equals v{live}");
    let flip = flow.promote(version, grace).await?;
    println!(
        "promoted {stored} v{version} at {}: one conditional write of the pointer (rev {}), {} ms; v{live} retires after {} s",
        flip.at.to_rfc3339(),
        flip.pointer.rev,
        flip.took.as_millis(),
        grace.as_secs()
    );
    tokio::time::sleep(grace).await;
    let deleted = flow.retire(live).await?;
    println!("retired {stored} v{live}: {deleted} items deleted");
    Ok(true)
}
