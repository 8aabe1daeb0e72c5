//! `eventfold local`: emulator + resources from the template + the HTTP API, in one process.

use crate::emulator::{Emulator, local_sdk_config};
use crate::gateway::{Gateway, Handler, serve};
use crate::provision::provision;
use crate::template::{FunctionSpec, Template};
use anyhow::{Context, Result};
use aws_config::SdkConfig;
use eventfold_aws::StoreConfig;
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
    server: JoinHandle<Result<()>>,
    emulator: Option<Emulator>,
}

impl std::fmt::Debug for LocalStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStack")
            .field("endpoint", &self.endpoint)
            .field("api_addr", &self.api_addr)
            .field("tables", &self.tables)
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
        _ => Ok(None),
    }
}

impl LocalStack {
    /// Starts (or connects to) the emulator, creates the template's resources and serves the API.
    pub async fn start(options: LocalOptions) -> Result<Self> {
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
        let template = Template::load(
            &options.root.join("infra/template.yaml"),
            &options.stack,
            &region,
        )?;
        let tables = provision(&sdk, &template)
            .await?
            .into_iter()
            .map(|(t, created)| (t.name, created))
            .collect();
        let mut gateway = Gateway::new(options.jwt_secret.clone());
        for function in template.functions() {
            match handler_for(&sdk, &function)? {
                Some(handler) if !function.routes.is_empty() => {
                    gateway.add_function(&function.logical_id, &function.routes, handler);
                }
                Some(_) => {}
                None => {
                    tracing::warn!(function = %function.logical_id, binary = %function.binary, "no local handler; skipped")
                }
            }
        }
        let gateway = Arc::new(gateway);
        let listener = TcpListener::bind(options.api_addr)
            .await
            .with_context(|| format!("binding the HTTP API on {}", options.api_addr))?;
        let api_addr = listener.local_addr()?;
        let server = tokio::spawn(serve(gateway.clone(), listener));
        Ok(Self {
            endpoint,
            sdk,
            template,
            api_addr,
            gateway,
            tables,
            server,
            emulator,
        })
    }

    /// Base URL of the HTTP API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Stops the API and the emulator.
    pub async fn stop(mut self) {
        self.server.abort();
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
