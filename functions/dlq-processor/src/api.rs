//! The dead-letters HTTP API: list, show, redrive, discard; scope `events:admin`, a tenant
//! sees and changes only its own letters. Routed on API Gateway's `routeKey`, so the
//! template is the one route table.

use crate::processor::{DlqError, DlqProcessor};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use eventfold_aws::http::{Problem, caller, json_response, route_key};
use eventfold_consumers::deadletter::{DeadLetterError, Filter, Status};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

/// The routes this function serves (as the template declares them).
pub fn routes() -> [&'static str; 4] {
    [LIST, SHOW, REDRIVE, DISCARD]
}

const LIST: &str = "GET /api/v1/events/dead-letters";
const SHOW: &str = "GET /api/v1/events/dead-letters/{id}";
const REDRIVE: &str = "POST /api/v1/events/dead-letters/{id}/redrive";
const DISCARD: &str = "POST /api/v1/events/dead-letters/{id}/discard";

/// The scope every route needs.
pub const ADMIN_SCOPE: &str = "events:admin";
/// Letters one list answers at most.
pub const MAX_LIMIT: usize = 100;
/// Longest discard reason.
pub const MAX_REASON: usize = 500;

fn problem(e: DlqError) -> Problem {
    match e {
        DlqError::Store(DeadLetterError::NotFound(id)) => {
            Problem::not_found(format!("no dead letter {id}"))
        }
        DlqError::Store(e @ DeadLetterError::NotOpen { .. }) => {
            Problem::new(409, "conflict", "Conflict", e.to_string())
        }
        DlqError::CannotRedrive(why) => {
            Problem::new(422, "rejected", "Cannot redrive", why).with("rule", "not-redrivable")
        }
        DlqError::Store(DeadLetterError::Unavailable(_)) | DlqError::Send(_) => Problem::new(
            503,
            "unavailable",
            "Service unavailable",
            "the dead letters are unavailable; retry later",
        ),
        DlqError::Store(DeadLetterError::Invalid(why)) => {
            Problem::new(500, "internal", "Internal error", why.to_string())
        }
    }
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid-request", detail)
}

/// A letter id: what [`eventfold_consumers::deadletter::letter_id`] makes (hex).
fn checked_id(req: &Request) -> Result<String, Problem> {
    let id = req
        .path_parameters_ref()
        .and_then(|p| p.first("id"))
        .unwrap_or_default();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::bad_request(
            "invalid-id",
            "a dead-letter id is 1-64 hexadecimal digits",
        ));
    }
    Ok(id.to_owned())
}

impl DlqProcessor {
    /// Handles one HTTP request. Never fails: every outcome is a response.
    pub async fn handle_http(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match self.dispatch(&req).await {
            Ok(resp) => resp,
            Err(p) => p.into_response(&path),
        }
    }

    async fn dispatch(&self, req: &Request) -> Result<Response<Body>, Problem> {
        let caller = caller(req)?;
        let route = route_key(req).ok_or_else(|| Problem::not_found("no such route"))?;
        if !routes().contains(&route) {
            return Err(Problem::not_found("no such route"));
        }
        caller.require(ADMIN_SCOPE)?;
        let tenant = Some(caller.tenant.as_str());
        match route {
            LIST => {
                let params = req.query_string_parameters();
                let mut filter = Filter::default();
                let mut limit = 50;
                for (name, value) in params.iter() {
                    match name {
                        "consumer" => {
                            if value.is_empty()
                                || value.len() > 64
                                || !value.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                            {
                                return Err(invalid("consumer is 1-64 of a-z and -"));
                            }
                            filter.consumer = Some(value.to_owned());
                        }
                        "status" => {
                            filter.status = Some(Status::parse(value).ok_or_else(|| {
                                invalid("status is one of open, redriven, discarded")
                            })?);
                        }
                        "limit" => {
                            limit = value
                                .parse::<usize>()
                                .ok()
                                .filter(|l| (1..=MAX_LIMIT).contains(l))
                                .ok_or_else(|| invalid(format!("limit must be 1..={MAX_LIMIT}")))?;
                        }
                        other => return Err(invalid(format!("no parameter '{other}'"))),
                    }
                }
                let items = self.list(tenant, &filter, limit).await.map_err(problem)?;
                Ok(json_response(200, &json!({ "items": items })))
            }
            SHOW => {
                let id = checked_id(req)?;
                let letter = self.get(tenant, &id).await.map_err(problem)?;
                Ok(json_response(200, &letter))
            }
            REDRIVE => {
                let id = checked_id(req)?;
                let done = self
                    .redrive(tenant, &id, &caller.actor)
                    .await
                    .map_err(problem)?;
                Ok(json_response(200, &done))
            }
            _ => {
                let id = checked_id(req)?;
                let body = match req.body() {
                    Body::Text(t) => t.as_bytes().to_vec(),
                    Body::Binary(b) => b.clone(),
                    _ => Vec::new(),
                };
                let v: Value = serde_json::from_slice(&body).map_err(|e| {
                    Problem::bad_request("malformed-json", format!("the body is not JSON: {e}"))
                })?;
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|r| !r.is_empty() && r.chars().count() <= MAX_REASON)
                    .ok_or_else(|| {
                        invalid(format!("'reason' is a string of 1-{MAX_REASON} characters"))
                    })?;
                let letter = self
                    .discard(tenant, &id, &caller.actor, reason)
                    .await
                    .map_err(problem)?;
                Ok(json_response(200, &letter))
            }
        }
    }
}

/// An HTTP response as the API Gateway payload 2.0 response Lambda returns.
pub fn api_response(resp: Response<Body>) -> ApiGatewayV2httpResponse {
    let (parts, body) = resp.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    match body {
        Body::Empty => {}
        b @ Body::Text(_) => out.body = Some(b),
        b @ Body::Binary(_) => {
            out.is_base64_encoded = true;
            out.body = Some(b);
        }
        _ => {}
    }
    out
}
