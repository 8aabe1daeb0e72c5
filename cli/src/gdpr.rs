//! `eventfold gdpr forget|export ID --tenant T`: an operator forgets a data subject (GDPR
//! Art. 17) or exports what is held of it (Art. 15), through the same code as the command
//! API's subject routes (`command_api::CommandApi::forget` / `export`), built from the
//! template's `CommandApiFunction` environment (its keys table and KMS key), each variable
//! overridable by the process environment (a deployed stack's names: `--aws`), as an
//! operator of `--tenant` with scope `events:admin`.

use anyhow::{Context, Result, bail};
use eventfold_aws::http::Caller;
use eventfold_aws::keys::SharedKeyRing;
use eventfold_local::Template;
use lambda_http::Body;

/// What to do (the subcommands of `eventfold gdpr`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum GdprCommand {
    /// Delete the subject's key and append `SubjectForgotten` (views scrub what they copied).
    Forget {
        /// The data subject (a customer id).
        id: String,
        /// The tenant the subject belongs to.
        #[arg(long)]
        tenant: String,
    },
    /// Print what is held of the subject (its stream, opened where its key still exists).
    Export {
        /// The data subject (a customer id).
        id: String,
        /// The tenant the subject belongs to.
        #[arg(long)]
        tenant: String,
    },
}

fn function_env(
    template: &Template,
    binary: &str,
) -> Result<eventfold_local::template::FunctionSpec> {
    template
        .functions()
        .into_iter()
        .find(|f| f.binary == binary)
        .with_context(|| format!("the template has no {binary} function"))
}

/// The key ring of the template's command API (`KEYS_TABLE` and `PERSONAL_DATA_KEY`, the
/// process environment first: a deployed stack's names are CloudFormation's), for tools
/// that open personal fields (a rebuild of a view that copies them). Locally the KMS key is
/// reached by the alias provisioning gives it, whether or not this process provisioned.
pub fn key_ring(sdk: &aws_config::SdkConfig, template: &Template) -> Result<SharedKeyRing> {
    let function = function_env(template, "command-api")?;
    Ok(eventfold_aws::keys::key_ring_from_lookup(sdk, |k| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| function.env(k))
    })?)
}

/// Runs `command` against the stack of `template` as `actor` (recorded on the
/// `SubjectForgotten` event); prints the answer's JSON.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    command: GdprCommand,
    actor: &str,
) -> Result<String> {
    let function = function_env(template, "command-api")?;
    let api = command_api::build(sdk, |k| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| function.env(k))
    })?;
    let caller = |tenant: String| Caller {
        actor: actor.to_owned(),
        tenant,
        scopes: vec!["events:admin".to_owned()],
    };
    let answer = match command {
        GdprCommand::Forget { id, tenant } => {
            let correlation = uuid::Uuid::now_v7().to_string();
            api.api().forget(&caller(tenant), &id, &correlation).await
        }
        GdprCommand::Export { id, tenant } => api.api().export(&caller(tenant), &id).await,
    };
    let text = match answer {
        Ok(response) => match response.into_body() {
            Body::Text(t) => t,
            Body::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        },
        Err(problem) => bail!("{} {}: {}", problem.status, problem.slug, problem.detail),
    };
    println!("{text}");
    Ok(text)
}
