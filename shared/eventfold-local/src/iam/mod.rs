//! IAM enforced locally, per function, action and resource: each function calls AWS as
//! itself (an access key naming it, [`access_key`]) through a proxy in front of the emulator
//! that checks every call against the function's role as the template gives it, answers a
//! denial as AWS does, and records every call it checked.
//!
//! Owns the stack's side of it (evaluation, request classification, the pinned managed
//! policies, the record and the report are `eventfold-iam`'s):
//! - [`roles`]: each function's role from SAM's own translation of the template, resolved to
//!   the stack's ARNs;
//! - the proxy (`proxy`) and [`deny`]: the enforcement point and the denials' wire shapes;
//! - [`labels`]: the stack's resource ARNs by logical id, so records of stacks with other
//!   names add up.

pub mod deny;
mod proxy;
pub mod roles;

pub use eventfold_iam::{classify, policy, record, report};

use crate::template::{LOCAL_ACCOUNT, Template};
use anyhow::{Context, Result};
use aws_config::SdkConfig;
use eventfold_iam::Role;
use eventfold_iam::record::{Call, Denial, Labels, Recorder, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The secret of every local function key (the emulator checks no signature).
pub const SECRET: &str = "local";

/// The access key id a function signs with: `LOCAL` + its logical id.
pub fn access_key(function: &str) -> String {
    format!("LOCAL{function}")
}

/// The environment variable naming a directory where each stack writes its checked calls
/// (`{stack}-{unique}.json`: stacks may share a name) as new kinds appear and when it stops,
/// for `eventfold iam report`.
pub const RECORD_ENV: &str = "EVENTFOLD_IAM_RECORD";

/// IAM enforcement for one stack: the proxy, the roles and the record.
pub struct Iam {
    endpoint: String,
    roles: Arc<BTreeMap<String, Role>>,
    labels: Labels,
    recorder: Arc<Recorder>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Iam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iam")
            .field("endpoint", &self.endpoint)
            .field("functions", &self.roles.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Each function's role in the provisioned `template` (translated from the template file
/// under `root`).
pub fn function_roles(root: &Path, template: &Template) -> Result<BTreeMap<String, Role>> {
    let translated = roles::translate(root, &root.join(crate::stack::TEMPLATE_PATH))?;
    roles::function_roles(template, &translated).context("resolving the functions' roles")
}

/// The labels of a provisioned `template`'s tables (with their indexes' and streams'
/// ARNs under them), queues and topics: their logical ids.
pub fn labels(template: &Template) -> Labels {
    let mut pairs = Vec::new();
    for t in template.tables() {
        if let Some(arn) = template.arn(&t.logical_id) {
            pairs.push((arn, t.logical_id.clone()));
        }
        let stream = serde_json::json!({"Fn::GetAtt": [t.logical_id, "StreamArn"]});
        if let Some(arn) = template.resolve(&stream) {
            pairs.push((arn, format!("{}/stream", t.logical_id)));
        }
    }
    for q in template.queues() {
        pairs.extend(
            template
                .arn(&q.logical_id)
                .map(|a| (a, q.logical_id.clone())),
        );
    }
    for t in template.topics() {
        pairs.extend(
            template
                .arn(&t.logical_id)
                .map(|a| (a, t.logical_id.clone())),
        );
    }
    // A KMS key's ARN is the emulator's (a random id) once provisioned, its alias's before:
    // either way labelled by its logical id, so the calls of every stack add up.
    for key in template.kms_keys() {
        let arn = serde_json::json!({"Fn::GetAtt": [key, "Arn"]});
        if let Some(arn) = template.resolve(&arn) {
            pairs.push((arn, key));
        }
    }
    Labels::new(pairs)
}

impl Iam {
    /// Starts the proxy on `port` (0: any free one) in front of `upstream` for the
    /// functions of the provisioned `template`.
    pub async fn start(
        root: &Path,
        template: &Template,
        upstream: &str,
        port: u16,
    ) -> Result<Self> {
        let roles = {
            let root = root.to_path_buf();
            let template = template.clone();
            tokio::task::spawn_blocking(move || function_roles(&root, &template)).await??
        };
        let labels = labels(template);
        let recorder = Arc::new(match std::env::var_os(RECORD_ENV) {
            Some(dir) => Recorder::to_file(Path::new(&dir).join(format!(
                "{}-{}.json",
                template.stack,
                uuid::Uuid::now_v7().simple()
            ))),
            None => Recorder::default(),
        });
        let state = Arc::new(proxy::State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            roles: roles
                .values()
                .map(|r| (access_key(&r.function), r.clone()))
                .collect::<HashMap<_, _>>(),
            scope: classify::Scope {
                region: template.region.clone(),
                account: LOCAL_ACCOUNT.to_owned(),
            },
            labels: labels.clone(),
            recorder: recorder.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding the IAM proxy on 127.0.0.1:{port}"))?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(proxy::run(listener, state));
        Ok(Self {
            endpoint,
            roles: Arc::new(roles),
            labels,
            recorder,
            task,
        })
    }

    /// The proxy's endpoint (what functions call).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The SDK configuration `function` (logical id) runs with: `base` pointed at the proxy,
    /// signing with the function's own key.
    pub fn sdk_for(&self, base: &SdkConfig, function: &str) -> SdkConfig {
        let credentials = aws_sdk_dynamodb::config::Credentials::new(
            access_key(function),
            SECRET,
            None,
            None,
            "eventfold-local-iam",
        );
        base.to_builder()
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                credentials,
            ))
            .build()
    }

    /// The roles, by function logical id.
    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    /// The labels of the stack's resources.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Every kind of call checked so far, with its count.
    pub fn calls(&self) -> BTreeMap<Call, u64> {
        self.recorder.calls()
    }

    /// Every kind of request sent so far (one per request, whatever its checks), with its
    /// count.
    pub fn requests(&self) -> BTreeMap<Request, u64> {
        self.recorder.requests()
    }

    /// Every denial so far.
    pub fn denials(&self) -> Vec<Denial> {
        self.recorder.denials()
    }

    /// Leaves this stack's calls out of the run's record (`EVENTFOLD_IAM_RECORD`): for a test
    /// that calls outside a role on purpose.
    pub fn leave_out_of_record(&self) {
        self.recorder.forget_file();
    }

    /// The report of the calls checked so far.
    pub fn report(&self) -> report::Report {
        report::Report::new(&self.roles, &self.labels, &self.calls())
    }
}

impl Drop for Iam {
    fn drop(&mut self) {
        self.task.abort();
        self.recorder.flush();
    }
}
