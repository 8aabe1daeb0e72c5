//! The functions a local stack can run in process, keyed by the binary a template function
//! names (`Metadata.BuildProperties.Binary`).
//!
//! The runtime knows no function: the caller registers, per binary, a factory that builds an
//! HTTP handler (for `HttpApi` routes) and/or an event handler (for `DynamoDB` and `SQS`
//! event sources) from the SDK configuration and the resolved [`FunctionSpec`] (its
//! environment with the intrinsics resolved), or one payload handler for both (a function
//! whose Lambda handler takes the raw payload and tells its kinds apart by shape). A template
//! function whose binary has no factory is reported and skipped.

use crate::esm::{EventHandler, HandlerError};
use crate::template::FunctionSpec;
use anyhow::{Context, Result};
use aws_config::SdkConfig;
use lambda_http::Body;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A function's HTTP handler, as the Lambda runtime would call it.
pub type HttpHandler = Arc<
    dyn Fn(
            lambda_http::Request,
        ) -> Pin<Box<dyn Future<Output = lambda_http::Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// Wraps an async closure as an [`HttpHandler`].
pub fn http_handler<F, Fut>(f: F) -> HttpHandler
where
    F: Fn(lambda_http::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = lambda_http::Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// What the local API Gateway calls for a function's routes.
#[derive(Clone)]
pub enum RouteHandler {
    /// A `lambda_http` handler: the request the Lambda runtime builds from the payload 2.0
    /// event in, the response out.
    Http(HttpHandler),
    /// A handler of the raw payload ([`Functions::payload`]): API Gateway's payload 2.0 event
    /// in, the payload 2.0 response JSON out (`Err`: the function failed).
    Payload(EventHandler),
}

impl From<HttpHandler> for RouteHandler {
    fn from(handler: HttpHandler) -> Self {
        Self::Http(handler)
    }
}

impl fmt::Debug for RouteHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http(_) => "RouteHandler::Http",
            Self::Payload(_) => "RouteHandler::Payload",
        })
    }
}

/// The handlers a stack runs for one function ([`Functions::handlers`]).
#[derive(Default, Clone)]
pub struct Handlers {
    /// For its routes.
    pub routes: Option<RouteHandler>,
    /// For its event sources.
    pub events: Option<EventHandler>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("routes", &self.routes)
            .field("events", &self.events.is_some())
            .finish()
    }
}

/// Why [`typed_handler`] could not hand the event to the function or its response back.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The event is not the function's event type.
    #[error("the event does not deserialize: {0}")]
    Event(#[source] serde_json::Error),
    /// The response does not serialize to JSON.
    #[error("the response does not serialize: {0}")]
    Response(#[source] serde_json::Error),
}

/// Adapts a typed Lambda handler (`aws_lambda_events` event in, response out) to an
/// [`EventHandler`]: the JSON event is deserialized as the Lambda runtime would (a payload
/// that does not fit is a function error), the response serialized back.
pub fn typed_handler<E, R, F, Fut>(f: F) -> EventHandler
where
    E: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let f = Arc::new(f);
    try_typed_handler(move |event: E| {
        let f = f.clone();
        async move { Ok::<_, std::convert::Infallible>(f(event).await) }
    })
}

/// [`typed_handler`] for a handler that can fail as a whole, as a Lambda handler returning
/// `Err`: the invocation fails with the error's message.
pub fn try_typed_handler<E, R, Er, F, Fut>(f: F) -> EventHandler
where
    E: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    Er: Into<HandlerError>,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Er>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |event: serde_json::Value| {
        let f = f.clone();
        Box::pin(async move {
            let typed: E = serde_json::from_value(event).map_err(PayloadError::Event)?;
            let response = f(typed).await.map_err(Into::into)?;
            Ok(serde_json::to_value(response).map_err(PayloadError::Response)?)
        })
    })
}

type HttpFactory = Arc<dyn Fn(&SdkConfig, &FunctionSpec) -> Result<HttpHandler> + Send + Sync>;
type EventFactory = Arc<
    dyn Fn(SdkConfig, FunctionSpec) -> Pin<Box<dyn Future<Output = Result<EventHandler>> + Send>>
        + Send
        + Sync,
>;

#[derive(Default, Clone)]
struct Entry {
    http: Option<HttpFactory>,
    events: Option<EventFactory>,
    /// One handler for routes and events; registered alone.
    payload: Option<EventFactory>,
}

/// Handler factories by binary name.
#[derive(Default, Clone)]
pub struct Functions {
    entries: BTreeMap<String, Entry>,
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(binary, e)| {
                let kinds = match (e.http.is_some(), e.events.is_some()) {
                    _ if e.payload.is_some() => "payload",
                    (true, true) => "http+events",
                    (true, false) => "http",
                    (false, true) => "events",
                    (false, false) => "-",
                };
                (binary, kinds)
            }))
            .finish()
    }
}

impl Functions {
    /// No functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves the routes of every function running `binary` with the handler `factory` builds.
    pub fn http<F>(mut self, binary: &str, factory: F) -> Self
    where
        F: Fn(&SdkConfig, &FunctionSpec) -> Result<HttpHandler> + Send + Sync + 'static,
    {
        let entry = self.entries.entry(binary.to_owned()).or_default();
        entry.http = Some(Arc::new(factory));
        entry.payload = None;
        self
    }

    /// Feeds the event sources of every function running `binary` to the handler `factory`
    /// builds (asynchronously: a function may look things up at cold start).
    pub fn events<F, Fut>(mut self, binary: &str, factory: F) -> Self
    where
        F: Fn(SdkConfig, FunctionSpec) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<EventHandler>> + Send + 'static,
    {
        let boxed: EventFactory = Arc::new(move |sdk, function| Box::pin(factory(sdk, function)));
        let entry = self.entries.entry(binary.to_owned()).or_default();
        entry.events = Some(boxed);
        entry.payload = None;
        self
    }

    /// Runs every invocation of `binary` through the one handler `factory` builds, as Lambda
    /// runs a function whose handler takes the raw payload (`serde_json::Value`): its event
    /// sources' events as they come, and for its routes API Gateway's payload 2.0 event,
    /// answered with the payload 2.0 response JSON. The handler is built once per function
    /// and serves both; it replaces an [`Functions::http`] or [`Functions::events`] factory of
    /// `binary` (and they replace it).
    pub fn payload<F, Fut>(mut self, binary: &str, factory: F) -> Self
    where
        F: Fn(SdkConfig, FunctionSpec) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<EventHandler>> + Send + 'static,
    {
        let boxed: EventFactory = Arc::new(move |sdk, function| Box::pin(factory(sdk, function)));
        self.entries.insert(
            binary.to_owned(),
            Entry {
                payload: Some(boxed),
                ..Entry::default()
            },
        );
        self
    }

    /// The binaries registered.
    pub fn binaries(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether `binary` has an HTTP (or payload) factory.
    pub fn serves_http(&self, binary: &str) -> bool {
        self.entries
            .get(binary)
            .is_some_and(|e| e.http.is_some() || e.payload.is_some())
    }

    /// Whether `binary` has an event (or payload) factory.
    pub fn consumes_events(&self, binary: &str) -> bool {
        self.entries
            .get(binary)
            .is_some_and(|e| e.events.is_some() || e.payload.is_some())
    }

    /// The handlers a stack runs for `function`: for its routes, when it has any, and for its
    /// event sources, when `events` (the stack polls them with the function's own handler).
    /// A binary registered with [`Functions::payload`] builds its one handler once, for both.
    pub async fn handlers(
        &self,
        sdk: &SdkConfig,
        function: &FunctionSpec,
        events: bool,
    ) -> Result<Handlers> {
        let routes = !function.routes.is_empty();
        let payload = self
            .entries
            .get(&function.binary)
            .and_then(|e| e.payload.clone());
        if let Some(factory) = payload {
            if !routes && !events {
                return Ok(Handlers::default());
            }
            let handler = factory(sdk.clone(), function.clone())
                .await
                .with_context(|| format!("configuring {}", function.logical_id))?;
            return Ok(Handlers {
                routes: routes.then(|| RouteHandler::Payload(handler.clone())),
                events: events.then_some(handler),
            });
        }
        let mut handlers = Handlers::default();
        if routes {
            handlers.routes = self.http_handler(sdk, function)?.map(RouteHandler::Http);
        }
        if events {
            handlers.events = self.event_handler(sdk, function).await?;
        }
        Ok(handlers)
    }

    /// The HTTP handler of `function`, when its binary has an HTTP factory.
    pub fn http_handler(
        &self,
        sdk: &SdkConfig,
        function: &FunctionSpec,
    ) -> Result<Option<HttpHandler>> {
        let Some(factory) = self
            .entries
            .get(&function.binary)
            .and_then(|e| e.http.as_ref())
        else {
            return Ok(None);
        };
        factory(sdk, function)
            .map(Some)
            .with_context(|| format!("configuring {}", function.logical_id))
    }

    /// The event handler of `function`, when its binary has an event (or payload) factory.
    pub async fn event_handler(
        &self,
        sdk: &SdkConfig,
        function: &FunctionSpec,
    ) -> Result<Option<EventHandler>> {
        let Some(factory) = self
            .entries
            .get(&function.binary)
            .and_then(|e| e.events.clone().or_else(|| e.payload.clone()))
        else {
            return Ok(None);
        };
        factory(sdk.clone(), function.clone())
            .await
            .map(Some)
            .with_context(|| format!("configuring {}", function.logical_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn spec(binary: &str) -> FunctionSpec {
        FunctionSpec {
            logical_id: format!("{binary}Function"),
            binary: binary.to_owned(),
            environment: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
            routes: Vec::new(),
            timeout: 3,
            memory_size: 128,
            handler: None,
            event_sources: Vec::new(),
        }
    }

    fn sdk() -> SdkConfig {
        SdkConfig::builder().build()
    }

    #[tokio::test]
    async fn factories_are_found_by_binary_and_see_the_environment() {
        let functions = Functions::new()
            .http("web", |_, f| {
                let greeting = f.env("GREETING").unwrap_or_default();
                Ok(http_handler(move |_req| {
                    let greeting = greeting.clone();
                    async move { lambda_http::Response::new(Body::Text(greeting)) }
                }))
            })
            .events("worker", |_, f| async move {
                let greeting = f.env("GREETING").unwrap_or_default();
                Ok(crate::esm::event_handler(move |e| {
                    let greeting = greeting.clone();
                    async move {
                        Ok::<_, crate::HandlerError>(json!({"greeting": greeting, "event": e}))
                    }
                }))
            });
        assert_eq!(functions.binaries().collect::<Vec<_>>(), ["web", "worker"]);
        assert!(functions.serves_http("web") && !functions.consumes_events("web"));
        assert!(functions.consumes_events("worker") && !functions.serves_http("worker"));
        assert!(!functions.serves_http("other") && !functions.consumes_events("other"));
        let web = functions
            .http_handler(&sdk(), &spec("web"))
            .expect("builds")
            .expect("registered");
        let resp = web(lambda_http::Request::default()).await;
        assert!(matches!(resp.body(), Body::Text(t) if t == "hi"));
        assert!(
            functions
                .http_handler(&sdk(), &spec("worker"))
                .expect("no error")
                .is_none()
        );
        let worker = functions
            .event_handler(&sdk(), &spec("worker"))
            .await
            .expect("builds")
            .expect("registered");
        assert_eq!(
            worker(json!(1)).await.expect("answers"),
            json!({"greeting": "hi", "event": 1})
        );
        assert!(
            functions
                .event_handler(&sdk(), &spec("other"))
                .await
                .expect("no error")
                .is_none()
        );
    }

    #[tokio::test]
    async fn one_payload_handler_is_built_once_for_routes_and_events() {
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = built.clone();
        let functions = Functions::new().payload("both", move |_, _| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                Ok(crate::esm::event_handler(|e| async move {
                    Ok::<_, String>(json!({"got": e}))
                }))
            }
        });
        assert!(functions.serves_http("both") && functions.consumes_events("both"));
        let mut function = spec("both");
        function.routes.push(crate::template::RouteSpec {
            method: "GET".into(),
            path: "/x".into(),
        });
        let handlers = functions
            .handlers(&sdk(), &function, true)
            .await
            .expect("builds");
        assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 1);
        let Some(RouteHandler::Payload(routes)) = handlers.routes else {
            panic!("a payload route handler: {handlers:?}");
        };
        let events = handlers.events.expect("an event handler");
        assert_eq!(routes(json!(1)).await.expect("answers"), json!({"got": 1}));
        assert_eq!(events(json!(2)).await.expect("answers"), json!({"got": 2}));
        let none = functions
            .handlers(&sdk(), &spec("both"), false)
            .await
            .expect("nothing to build");
        assert!(none.routes.is_none() && none.events.is_none());
        assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A later registration of one kind replaces it.
        let functions = functions.events("both", |_, _| async move {
            Ok(crate::esm::event_handler(|_| async move {
                Ok::<_, String>(json!(0))
            }))
        });
        assert!(!functions.serves_http("both"));
    }

    #[tokio::test]
    async fn factory_errors_name_the_function() {
        let functions = Functions::new().http("web", |_, _| anyhow::bail!("EVENTS_TABLE unset"));
        let err = functions
            .http_handler(&sdk(), &spec("web"))
            .err()
            .expect("fails");
        assert!(
            format!("{err:#}").contains("configuring webFunction"),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("EVENTS_TABLE unset"), "{err:#}");
    }

    #[tokio::test]
    async fn typed_handlers_deserialize_like_the_lambda_runtime() {
        #[derive(serde::Deserialize)]
        struct In {
            n: u32,
        }
        let double = typed_handler(|e: In| async move { json!({"n": e.n * 2}) });
        assert_eq!(
            double(json!({"n": 21})).await.expect("answers"),
            json!({"n": 42})
        );
        let err = double(json!({"n": "x"})).await.expect_err("bad payload");
        assert!(err.to_string().contains("does not deserialize"), "{err}");
    }

    #[tokio::test]
    async fn a_fallible_handler_fails_the_invocation_with_its_message() {
        let halve = try_typed_handler(|n: u32| async move {
            if n.is_multiple_of(2) {
                Ok(n / 2)
            } else {
                Err(format!("{n} is odd"))
            }
        });
        assert_eq!(halve(json!(42)).await.expect("answers"), json!(21));
        let odd = halve(json!(7)).await.expect_err("fails");
        assert_eq!(odd.to_string(), "7 is odd");
        let err = halve(json!("x")).await.expect_err("bad payload");
        assert!(err.to_string().contains("does not deserialize"), "{err}");
    }
}
