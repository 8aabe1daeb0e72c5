//! `eventfold local`: emulator + resources from the template + the HTTP API + the event-source
//! pollers (stream and queues -> functions), in one process.

use crate::emulator::{Emulator, local_sdk_config};
use crate::esm::{self, Esm, EsmOptions, EventHandler, SourceStats};
use crate::gateway::{Gateway, Handler, serve};
use crate::provision::{Provisioned, provision};
use crate::template::{FunctionSpec, Template};
use anyhow::{Context, Result};
use aws_config::SdkConfig;
use eventfold_aws::StoreConfig;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How to start the local stack.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Repository root (holds `infra/template.yaml`, `scripts/`, `.venv`).
    pub root: PathBuf,
    /// HTTP API address (port 0: any free port).
    pub api_addr: SocketAddr,
    /// Emulator port when we start one (0: any free port).
    pub emulator_port: u16,
    /// Use this endpoint instead of starting an emulator.
    pub endpoint: Option<String>,
    /// Stack name: prefix of every physical name.
    pub stack: String,
    /// Secret for the gateway's JWT check.
    pub jwt_secret: String,
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

/// The handler of a template function, built from its resolved environment, if this binary
/// can run it in process.
pub fn handler_for(sdk: &SdkConfig, function: &FunctionSpec) -> Result<Option<Handler>> {
    let env = function.environment.clone();
    match function.binary.as_str() {
        "command-api" => {
            let config = StoreConfig::from_lookup(|k| env.get(k).cloned())
                .with_context(|| format!("configuring {}", function.logical_id))?;
            let api = Arc::new(command_api::dynamo_api(sdk, &config));
            Ok(Some(Arc::new(move |req| {
                let api = api.clone();
                Box::pin(async move { api.handle(req).await })
            })))
        }
        "query-api" => {
            let config = query_api::QueryConfig::from_lookup(|k| env.get(k).cloned())
                .with_context(|| format!("configuring {}", function.logical_id))?;
            let api = Arc::new(query_api::dynamo_api(sdk, &config));
            Ok(Some(Arc::new(move |req| {
                let api = api.clone();
                Box::pin(async move { api.handle(req).await })
            })))
        }
        _ => Ok(None),
    }
}

/// The event handler (see [`esm::EventHandler`]) of a template function, built from its
/// resolved environment, if this binary can run it in process.
pub async fn event_handler_for(
    sdk: &SdkConfig,
    function: &FunctionSpec,
) -> Result<Option<EventHandler>> {
    let env = function.environment.clone();
    let lookup = move |k: &str| env.get(k).cloned();
    let context = || format!("configuring {}", function.logical_id);
    match function.binary.as_str() {
        "stream-publisher" => {
            let publisher = Arc::new(
                stream_publisher::from_lookup(sdk, lookup)
                    .await
                    .with_context(context)?,
            );
            Ok(Some(typed_handler(move |event| {
                let publisher = publisher.clone();
                async move { publisher.handle(event).await }
            })))
        }
        "projector" => {
            let projector = Arc::new(projector::from_lookup(sdk, lookup).with_context(context)?);
            Ok(Some(typed_handler(move |event| {
                let projector = projector.clone();
                async move { projector.handle(event).await }
            })))
        }
        _ => Ok(None),
    }
}

/// Adapts a typed Lambda handler (`aws_lambda_events` event in, response out) to an
/// [`EventHandler`]: the JSON event is deserialized as the Lambda runtime would (a payload
/// that does not fit is a function error), the response serialized back.
pub fn typed_handler<E, R, F, Fut>(f: F) -> EventHandler
where
    E: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |event: serde_json::Value| {
        let f = f.clone();
        Box::pin(async move {
            let typed: E = serde_json::from_value(event)
                .map_err(|e| format!("the event does not deserialize: {e}"))?;
            let response = f(typed).await;
            serde_json::to_value(response)
                .map_err(|e| format!("the response does not serialize: {e}"))
        })
    })
}

impl LocalStack {
    /// Starts (or connects to) the emulator, creates the template's resources, serves the API
    /// and polls the event sources (default [`EsmOptions`]).
    pub async fn start(options: LocalOptions) -> Result<Self> {
        Self::start_with(options, EsmOptions::default()).await
    }

    /// [`LocalStack::start`] with event-source options: handler overrides, which functions'
    /// sources to poll, a short SQS visibility timeout for tests, reporting.
    pub async fn start_with(options: LocalOptions, esm_options: EsmOptions) -> Result<Self> {
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
        let mut template = Template::load(
            &options.root.join("infra/template.yaml"),
            &options.stack,
            &region,
        )?;
        // Queues before functions: a queue's Ref (its URL) comes from the emulator.
        let provisioned = provision(&sdk, &mut template).await?;
        let tables = provisioned
            .tables
            .iter()
            .map(|(t, created)| (t.name.clone(), *created))
            .collect();
        let mut gateway = Gateway::new(options.jwt_secret.clone());
        let mut event_handlers: HashMap<String, EventHandler> = HashMap::new();
        for function in template.functions() {
            if !function.routes.is_empty() {
                match handler_for(&sdk, &function)? {
                    Some(handler) => {
                        gateway.add_function(&function.logical_id, &function.routes, handler);
                    }
                    None => {
                        tracing::warn!(function = %function.logical_id, binary = %function.binary, "no local HTTP handler; routes skipped")
                    }
                }
            }
            let wanted = esm_options.enabled
                && !function.event_sources.is_empty()
                && !esm_options
                    .handler_overrides
                    .contains_key(&function.logical_id)
                && esm_options
                    .functions
                    .as_ref()
                    .is_none_or(|only| only.contains(&function.logical_id));
            if wanted && let Some(handler) = event_handler_for(&sdk, &function).await? {
                event_handlers.insert(function.logical_id.clone(), handler);
            }
        }
        let gateway = Arc::new(gateway);
        let listener = TcpListener::bind(options.api_addr)
            .await
            .with_context(|| format!("binding the HTTP API on {}", options.api_addr))?;
        let api_addr = listener.local_addr()?;
        let server = tokio::spawn(serve(gateway.clone(), listener));
        let esm = esm::start(&sdk, &template, &event_handlers, &esm_options)?;
        Ok(Self {
            endpoint,
            sdk,
            template,
            api_addr,
            gateway,
            tables,
            provisioned,
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
