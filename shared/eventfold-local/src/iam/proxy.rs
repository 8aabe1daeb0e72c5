//! The enforcement point: an HTTP proxy in front of the emulator. A request signed with a
//! function's access key is classified ([`super::classify`]), each of its checks evaluated
//! against the function's role, recorded, and either forwarded or answered with AWS's denial;
//! a request it cannot classify is refused. A request signed with any other key (the test
//! harness's and the provisioning's admin clients) goes through unchecked.

use super::deny::{denial, message};
use crate::serve::{Response, response, serve};
use bytes::Bytes;
use eventfold_iam::Role;
use eventfold_iam::classify::{Check, Classification, Scope, classify, credential};
use eventfold_iam::policy::Decision;
use eventfold_iam::record::{Call, Denial, Labels, Recorder, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::HashMap;
use std::sync::Arc;

/// What the proxy knows.
pub(super) struct State {
    /// Upstream base URL (`http://127.0.0.1:PORT`).
    pub upstream: String,
    /// Function roles by access key id.
    pub roles: HashMap<String, Role>,
    pub scope: Scope,
    pub labels: Labels,
    pub recorder: Arc<Recorder>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

/// Serves the proxy on `listener` until the task is aborted.
pub(super) async fn run(listener: tokio::net::TcpListener, state: Arc<State>) {
    let handle = move |req: hyper::Request<Incoming>, _peer| {
        let state = state.clone();
        async move { handle(&state, req).await }
    };
    if let Err(e) = serve(listener, handle).await {
        tracing::error!(error = %e, "the IAM proxy stopped accepting");
    }
}

async fn handle(state: &State, req: hyper::Request<Incoming>) -> Response {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return response(400, format!("reading the request: {e}")),
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some((key, service)) = header("authorization").and_then(credential)
        && let Some(role) = state.roles.get(key)
        && let Some(refusal) = check(state, role, service, header("x-amz-target"), &body)
    {
        return refusal;
    }
    forward(state, parts, body).await
}

/// `None` when every check passes; else the denial to answer.
fn check(
    state: &State,
    role: &Role,
    service: &str,
    target: Option<&str>,
    body: &[u8],
) -> Option<Response> {
    let (protocol, checks) = match classify(&state.scope, target, service, body) {
        Classification::Checks {
            protocol,
            operation,
            checks,
        } => {
            let mut resources: Vec<String> = checks
                .iter()
                .map(|c| state.labels.label(&c.resource))
                .collect();
            resources.sort();
            resources.dedup();
            state.recorder.request(Request {
                function: role.function.clone(),
                operation: format!("{service}:{operation}"),
                resources: resources.join("+"),
            });
            (protocol, checks)
        }
        Classification::Unknown { protocol, reason } => {
            let text = format!(
                "eventfold local IAM: the request of {} to {service} is not understood ({reason}); refused rather than let through unchecked",
                role.function
            );
            tracing::error!(function = %role.function, %service, %reason, "IAM: unclassified request refused");
            state.recorder.record(Call {
                function: role.function.clone(),
                action: format!("{service}:?"),
                resource: reason.clone(),
                allowed: false,
            });
            state.recorder.deny(Denial {
                function: role.function.clone(),
                action: format!("{service}:?"),
                resource: reason,
                message: text.clone(),
            });
            return Some(denial(protocol, service, &text));
        }
    };
    let mut refused = None;
    for Check { action, resource } in checks {
        let decision = role.decide(&action, &resource);
        state.recorder.record(Call {
            function: role.function.clone(),
            action: action.clone(),
            resource: state.labels.label(&resource),
            allowed: decision.allowed(),
        });
        if !decision.allowed() && refused.is_none() {
            let text = message(
                &role.principal,
                &action,
                &resource,
                decision == Decision::ExplicitDeny,
            );
            tracing::error!(function = %role.function, %action, %resource, "IAM DENIED: {text}");
            eprintln!("IAM DENIED {} {action} on {resource}", role.function);
            state.recorder.deny(Denial {
                function: role.function.clone(),
                action,
                resource,
                message: text.clone(),
            });
            refused = Some(denial(Some(protocol), service, &text));
        }
    }
    refused
}

async fn forward(state: &State, parts: hyper::http::request::Parts, body: Bytes) -> Response {
    crate::serve::relay(
        &state.client,
        &state.upstream,
        parts,
        body,
        "eventfold IAM proxy",
    )
    .await
}
