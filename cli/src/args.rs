//! The flags that describe a local stack, shared by `eventfold local` and the benchmarks
//! (`eventfold-bench`), which start the same stack; and those of `eventfold verify`.

use anyhow::Result;
use eventfold_local::{JwtConfig, LocalOptions};
use std::net::SocketAddr;

/// Where and how to start the local stack.
#[derive(clap::Args, Debug, Clone)]
pub struct StackArgs {
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub api: SocketAddr,
    /// Port of the emulator we start (unless AWS_ENDPOINT_URL is set).
    #[arg(long, default_value_t = 4566)]
    pub emulator_port: u16,
    /// Prefix of physical resource names.
    #[arg(long, default_value = "eventfold-local")]
    pub stack: String,
    /// Template parameters, as `sam deploy` takes them: `Name=Value` pairs (or
    /// `ParameterKey=Name,ParameterValue=Value`), e.g. `PaymentTimeoutSeconds=5`.
    #[arg(long, num_args = 1.., value_name = "NAME=VALUE")]
    pub parameter_overrides: Vec<String>,
    /// Do NOT enforce IAM: functions call AWS unchecked (a call their role does not allow
    /// then fails only after a deploy). IAM is enforced by default.
    #[arg(long)]
    pub no_iam: bool,
    /// Port of the IAM proxy the functions call AWS through (0: any free port). The
    /// environment `--print-env FUNCTION` prints points at it.
    #[arg(long, default_value_t = 4567)]
    pub iam_port: u16,
}

impl StackArgs {
    /// The stack's options: the repository root found from the working directory, an
    /// endpoint given by `AWS_ENDPOINT_URL` (else the emulator we start), the JWT settings
    /// from the environment.
    pub fn options(self) -> Result<LocalOptions> {
        Ok(LocalOptions {
            root: eventfold_local::emulator::find_root(&std::env::current_dir()?)?,
            api_addr: self.api,
            emulator_port: self.emulator_port,
            endpoint: std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|e| !e.is_empty()),
            stack: self.stack,
            auth: JwtConfig::from_env()?,
            parameter_overrides: eventfold_local::template::parse_parameter_overrides(
                &self.parameter_overrides,
            )?,
            iam: !self.no_iam,
            iam_port: self.iam_port,
        })
    }
}

/// `eventfold verify`: which stack, reached how, with which token, for how long.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The CloudFormation stack (its outputs name everything verify calls and reads).
    #[arg(long, default_value = "eventfold-local")]
    pub stack: String,
    /// An AWS endpoint (the local emulator, e.g. http://127.0.0.1:4566): its dummy
    /// credentials, and a token minted here with the local JWT settings unless --token is
    /// given. Without it: the AWS SDK's own region and credentials (profile, SSO, env).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Bearer token for the HTTP API (scopes events:read events:write, tenant
    /// `eventfold-verify`); needed against AWS.
    #[arg(long, env = "EVENTFOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long the asynchronous hops may take, in seconds, from the order's placement.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

impl VerifyArgs {
    /// The SDK configuration (the endpoint's, else AWS's) and verify's options.
    pub async fn resolve(self) -> Result<(aws_config::SdkConfig, crate::verify::Options)> {
        let local = self.endpoint.as_deref().filter(|e| !e.is_empty());
        let token = match (self.token, local) {
            (Some(t), _) => t,
            // The local gateway checks tokens with the same settings `eventfold token` uses.
            (None, Some(_)) => JwtConfig::from_env()?.issue(
                crate::verify::TENANT,
                "eventfold-verify",
                "events:read events:write",
                i64::try_from(self.timeout)?.saturating_add(600),
            ),
            (None, None) => anyhow::bail!(
                "a deployed stack needs --token (or EVENTFOLD_TOKEN): a token of your issuer for tenant {} with scopes events:read events:write",
                crate::verify::TENANT
            ),
        };
        let sdk = match local {
            Some(endpoint) => eventfold_local::emulator::local_sdk_config(endpoint).await,
            None => eventfold_aws::sdk_config().await,
        };
        Ok((
            sdk,
            crate::verify::Options {
                stack: self.stack,
                token,
                timeout: std::time::Duration::from_secs(self.timeout),
                poll: std::time::Duration::from_millis(250),
            },
        ))
    }
}
