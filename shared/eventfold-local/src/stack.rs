//! A whole local stack in one process: the emulator (or any endpoint), the template's
//! resources, the HTTP API and the event-source pollers, running the caller's [`Functions`].

use crate::emulator::{Emulator, local_sdk_config};
use crate::esm::{self, Esm, EsmOptions, EventHandler, SourceStats};
use crate::functions::Functions;
use crate::gateway::{Gateway, serve};
use crate::iam::Iam;
use crate::jwt::JwtConfig;
use crate::outputs::{self, Output};
use crate::provision::{Provisioned, provision};
use crate::template::Template;
use anyhow::{Context, Result};
use aws_config::SdkConfig;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the template lives under the root.
pub const TEMPLATE_PATH: &str = "infra/template.yaml";

/// How to start the local stack.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Repository root (holds `infra/template.yaml`, `scripts/moto_server.py`, `.venv`).
    pub root: PathBuf,
    /// HTTP API address (port 0: any free port).
    pub api_addr: SocketAddr,
    /// Emulator port when we start one (0: any free port).
    pub emulator_port: u16,
    /// Use this endpoint instead of starting an emulator.
    pub endpoint: Option<String>,
    /// Stack name: prefix of every physical name.
    pub stack: String,
    /// The gateway's JWT check.
    pub auth: JwtConfig,
    /// Template parameters to override, as `sam deploy --parameter-overrides` gives them
    /// (name, value; see [`crate::template::parse_parameter_overrides`]).
    pub parameter_overrides: Vec<(String, String)>,
    /// Enforce IAM: each function calls AWS as itself, checked against its template role
    /// ([`crate::iam`]). On unless turned off explicitly.
    pub iam: bool,
    /// Port of the IAM proxy (0: any free port). A fixed one lets a function run alone
    /// (`eventfold local --print-env FUNCTION`) call AWS through it, as itself.
    pub iam_port: u16,
}

/// A running local stack; everything stops when it is dropped.
pub struct LocalStack {
    /// AWS endpoint in use.
    pub endpoint: String,
    /// SDK configuration pointing at it.
    pub sdk: SdkConfig,
    /// The resolved template.
    pub template: Template,
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// The gateway (routes and handlers).
    pub gateway: Arc<Gateway>,
    /// Tables as (name, created now?).
    pub tables: Vec<(String, bool)>,
    /// Everything provisioned (tables, topics, queues, subscriptions).
    pub provisioned: Provisioned,
    /// IAM enforcement, when on.
    pub iam: Option<Iam>,
    /// The template's outputs as this stack resolved them, registered on the endpoint as the
    /// CloudFormation stack [`Template::stack`] ([`crate::outputs`]).
    pub outputs: Vec<Output>,
    server: JoinHandle<Result<()>>,
    esm: Esm,
    emulator: Option<Emulator>,
}

impl std::fmt::Debug for LocalStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStack")
            .field("endpoint", &self.endpoint)
            .field("api_addr", &self.api_addr)
            .field("tables", &self.tables)
            .field("event_sources", &self.esm)
            .finish()
    }
}

impl LocalStack {
    /// Starts (or connects to) the emulator, creates the template's resources, serves the
    /// routes of the functions `functions` can run and polls their event sources.
    pub async fn start(
        options: LocalOptions,
        functions: &Functions,
        esm_options: EsmOptions,
    ) -> Result<Self> {
        let (endpoint, emulator) = match &options.endpoint {
            Some(e) => (e.clone(), None),
            None => {
                let emu = Emulator::start(&options.root, options.emulator_port).await?;
                (emu.endpoint.clone(), Some(emu))
            }
        };
        let sdk = local_sdk_config(&endpoint).await;
        let region = sdk
            .region()
            .map_or("us-east-1".to_owned(), ToString::to_string);
        let mut template =
            Template::load(&options.root.join(TEMPLATE_PATH), &options.stack, &region)?;
        template.override_parameters(&options.parameter_overrides)?;
        // Queues before functions: a queue's Ref (its URL) comes from the emulator.
        let provisioned = provision(&sdk, &mut template).await?;
        let tables = provisioned
            .tables
            .iter()
            .map(|(t, created)| (t.name.clone(), *created))
            .collect();
        let iam = if options.iam {
            Some(Iam::start(&options.root, &template, &endpoint, options.iam_port).await?)
        } else {
            tracing::warn!(
                "IAM is NOT enforced: functions call AWS unchecked; a call their role does not allow fails only after a deploy"
            );
            None
        };
        let sdk_of = |function: &str| match &iam {
            Some(iam) => iam.sdk_for(&sdk, function),
            None => sdk.clone(),
        };
        let mut gateway = Gateway::new(options.auth.clone());
        let mut event_handlers: HashMap<String, EventHandler> = HashMap::new();
        for function in template.functions() {
            let events = !function.event_sources.is_empty()
                && esm_options.needs_handler(&function.logical_id);
            let handlers = functions
                .handlers(&sdk_of(&function.logical_id), &function, events)
                .await?;
            if !function.routes.is_empty() {
                match handlers.routes {
                    Some(handler) => {
                        gateway.add_function(&function.logical_id, &function.routes, handler);
                        gateway.set_timeout(
                            &function.logical_id,
                            std::time::Duration::from_secs(function.timeout),
                        );
                    }
                    None => {
                        tracing::warn!(function = %function.logical_id, binary = %function.binary, "no local HTTP handler; routes skipped")
                    }
                }
            }
            if let Some(handler) = handlers.events {
                event_handlers.insert(function.logical_id.clone(), handler);
            }
        }
        let gateway = Arc::new(gateway);
        let listener = TcpListener::bind(options.api_addr)
            .await
            .with_context(|| format!("binding the HTTP API on {}", options.api_addr))?;
        let api_addr = listener.local_addr()?;
        let server = tokio::spawn(serve(gateway.clone(), listener));
        // The outputs as `DescribeStacks` gives a deployed stack's, for `eventfold verify`.
        let outputs = outputs::resolve(
            &options.root.join(TEMPLATE_PATH),
            &template,
            &format!("http://{api_addr}"),
        )?;
        let registering = std::time::Instant::now();
        outputs::register(&sdk, &template.stack, &outputs).await?;
        tracing::debug!(
            stack = %template.stack,
            ms = registering.elapsed().as_millis(),
            "outputs registered as a CloudFormation stack"
        );
        let esm = esm::start(&sdk_of, &sdk, &template, &event_handlers, &esm_options)?;
        Ok(Self {
            endpoint,
            sdk,
            template,
            api_addr,
            gateway,
            tables,
            provisioned,
            iam,
            outputs,
            server,
            esm,
            emulator,
        })
    }

    /// The running event-source pollers.
    pub fn esm(&self) -> &Esm {
        &self.esm
    }

    /// Event-source counters per function logical id.
    pub fn esm_stats(&self) -> BTreeMap<String, SourceStats> {
        self.esm.stats()
    }

    /// URL of a queue of the template (by logical id).
    pub fn queue_url(&self, logical_id: &str) -> String {
        self.template.queue_url(logical_id)
    }

    /// Physical name of a table, queue or topic of the template (by logical id).
    pub fn resource_name(&self, logical_id: &str) -> String {
        self.template.resource_name(logical_id)
    }

    /// The SDK configuration the function `logical_id` runs with: signing as itself through
    /// the IAM proxy when IAM is on, else [`Self::sdk`].
    pub fn function_sdk(&self, logical_id: &str) -> SdkConfig {
        match &self.iam {
            Some(iam) => iam.sdk_for(&self.sdk, logical_id),
            None => self.sdk.clone(),
        }
    }

    /// The endpoint and credentials (access key id, secret) the function `logical_id` calls
    /// AWS with, when IAM is on.
    pub fn function_credentials(&self, logical_id: &str) -> Option<(String, String, String)> {
        self.iam.as_ref().map(|iam| {
            (
                iam.endpoint().to_owned(),
                crate::iam::access_key(logical_id),
                crate::iam::SECRET.to_owned(),
            )
        })
    }

    /// The emulator this stack started (none when it was given an endpoint).
    pub fn emulator(&self) -> Option<&Emulator> {
        self.emulator.as_ref()
    }

    /// Base URL of the HTTP API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Stops the API, the pollers (printing their counters) and the emulator.
    pub async fn stop(mut self) {
        self.server.abort();
        self.esm.stop();
        if let Some(e) = self.emulator.take() {
            e.stop().await;
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.server.abort();
    }
}
