//! `eventfold dlq`: an operator's view of the dead letters of every tenant (list, show,
//! redrive, discard), through the same [`dlq_processor::DlqProcessor`] the function runs,
//! configured from the template's `DlqProcessorFunction` environment.

use anyhow::{Context, Result, bail};
use dlq_processor::DlqProcessor;
use eventfold_consumers::deadletter::{Filter, Status};

/// What to do (the subcommands of `eventfold dlq`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest failure first.
    List {
        /// Only this consumer's (projector, saga, stream-publisher).
        #[arg(long)]
        consumer: Option<String>,
        /// Only with this status (open, redriven, discarded).
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one dead letter in full.
    Show {
        /// The letter's id.
        id: String,
    },
    /// Send a dead letter (with the open letters of its stream) or all open ones back.
    Redrive {
        /// The letter's id.
        id: Option<String>,
        /// Every open letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// With --all: only this consumer's.
        #[arg(long, requires = "all")]
        consumer: Option<String>,
    },
    /// Give up on a dead letter.
    Discard {
        /// The letter's id.
        id: String,
        /// Why (kept on the letter).
        #[arg(long)]
        reason: String,
    },
}

/// The processor of the template's `DlqProcessorFunction` in `template` (resolved names).
pub fn processor(
    sdk: &aws_config::SdkConfig,
    template: &eventfold_local::Template,
) -> Result<DlqProcessor> {
    let function = template
        .functions()
        .into_iter()
        .find(|f| f.binary == "dlq-processor")
        .context("the template has no dlq-processor function")?;
    Ok(dlq_processor::build(sdk, |k| function.env(k))?)
}

/// Who an operator's change is recorded as.
fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
    )
}

/// Runs `command`, printing what it did; the lines it printed.
pub async fn run(processor: &DlqProcessor, command: DlqCommand) -> Result<Vec<String>> {
    let mut out = Vec::new();
    match command {
        DlqCommand::List { consumer, status } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    Status::parse(s)
                        .with_context(|| format!("status '{s}': open, redriven or discarded"))?,
                ),
            };
            let filter = Filter {
                consumer,
                status,
                stream_id: None,
            };
            let letters = processor.list(None, &filter, usize::MAX).await?;
            for l in &letters {
                out.push(format!("{} {}", l.tenant, dlq_processor::describe(l)));
            }
            out.push(format!("{} dead letter(s)", letters.len()));
        }
        DlqCommand::Show { id } => {
            let letter = processor.get(None, &id).await?;
            out.push(serde_json::to_string_pretty(&letter)?);
        }
        DlqCommand::Redrive { id, all, consumer } => match (id, all) {
            (Some(id), false) => {
                let r = processor.redrive(None, &id, &operator()).await?;
                out.push(format!(
                    "sent {}; redriven: {}",
                    r.sent,
                    r.redriven.join(" ")
                ));
            }
            (None, true) => {
                let (done, failed) = processor
                    .redrive_all(consumer.as_deref(), &operator())
                    .await?;
                for r in &done {
                    out.push(format!(
                        "sent {}; redriven: {}",
                        r.sent,
                        r.redriven.join(" ")
                    ));
                }
                for (id, why) in &failed {
                    out.push(format!("not redriven {id}: {why}"));
                }
                out.push(format!(
                    "{} sent, {} letter(s) redriven, {} failed",
                    done.len(),
                    done.iter().map(|r| r.redriven.len()).sum::<usize>(),
                    failed.len()
                ));
            }
            _ => bail!("give a dead-letter id or --all"),
        },
        DlqCommand::Discard { id, reason } => {
            if reason.trim().is_empty() {
                bail!("--reason must say why");
            }
            let l = processor.discard(None, &id, &operator(), &reason).await?;
            out.push(format!("discarded {} ({})", l.id, reason));
        }
    }
    for line in &out {
        println!("{line}");
    }
    Ok(out)
}
