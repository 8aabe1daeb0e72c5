//! The operator API: the dead-letters operations (list, show, redrive, discard), which
//! `eventfold dlq` runs too, and their HTTP API; scope `events:admin`, a tenant sees and
//! changes only its own letters. The HTTP list pages by a cursor and stops at a byte budget
//! as well as at `limit`, so its answer stays under Lambda's 6 MB. Routed on API Gateway's `routeKey`, so the template is the
//! one route table.

use crate::redrive::{CommitKey, SendError};
use crate::republish::CommitFailure;
use crate::{DlqProcessor, chain};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use chrono::{DateTime, Utc};
use eventfold::PageBudget;
use eventfold_aws::http::{Problem, caller, json_response, route_key};
use eventfold_aws::sns::group_id;
use eventfold_consumers::deadletter::{
    Change, DeadLetter, DeadLetterError, Filter, STREAM_CONSUMER, Status, redrive_plan,
};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Why a redrive, a discard or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The dead-letter store said no (not found, not open) or failed.
    #[error(transparent)]
    Store(#[from] DeadLetterError),
    /// The letter cannot be redriven (and why): discard it, or rebuild the views.
    #[error("cannot redrive: {0}")]
    CannotRedrive(String),
    /// Sending it back to its consumer's queue failed; retry later.
    #[error("redrive not sent")]
    Send(#[source] SendError),
    /// Republishing its commit failed; retry later.
    #[error("redrive not sent")]
    Republish(#[source] CommitFailure),
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    /// The letter whose message was sent back.
    pub sent: String,
    /// Every letter the send covered (now `redriven`), lowest version first.
    pub redriven: Vec<String>,
}

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
        DlqError::Store(DeadLetterError::Unavailable(_))
        | DlqError::Send(_)
        | DlqError::Republish(_) => Problem::new(
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

/// Where a page of letters ended: the last letter's place in the list's order (first
/// failure, then id). Written `{nanoseconds since 1970}.{id}` (URL-safe as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterCursor {
    /// The last letter's first failure.
    pub at: DateTime<Utc>,
    /// The last letter's id.
    pub id: String,
}

impl LetterCursor {
    /// The cursor as the API writes it.
    pub fn encode(&self) -> String {
        let nanos = self.at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        format!("{nanos}.{}", self.id)
    }

    /// A cursor [`encode`](Self::encode) wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let (nanos, id) = text.split_once('.')?;
        let valid_id =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let nanos = nanos.parse::<i64>().ok().filter(|_| valid_id)?;
        Some(Self {
            at: DateTime::from_timestamp_nanos(nanos),
            id: id.to_owned(),
        })
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
    /// Letters of `tenant` (`None`: all) passing `filter`, oldest first.
    pub async fn list(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DlqError> {
        Ok(self.letters.list(tenant, filter, limit).await?)
    }

    /// A page of the letters of `tenant` passing `filter`, oldest first, after `after` (the
    /// `next` of the previous page): at most `limit` letters within the byte budget, and the
    /// cursor after them when more follow. A letter holds a message as it arrived (up to
    /// 1 MiB from SQS, less in the 400 KB item it is kept in), so 100 of them can pass
    /// Lambda's 6 MB answer; one always fits (2.8 MB at most on the wire).
    pub async fn page(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        after: Option<&LetterCursor>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<LetterCursor>), DlqError> {
        // The stores read every letter of the tenant to sort them: asking for all costs the
        // same as asking for a page.
        let letters = self.letters.list(tenant, filter, usize::MAX).await?;
        let mut budget = PageBudget::new(self.page_bytes);
        let mut page = Vec::new();
        let mut more = false;
        let rest = letters
            .into_iter()
            .filter(|l| after.is_none_or(|c| (l.first_failure_at, &l.id) > (c.at, &c.id)));
        for letter in rest {
            if page.len() == limit || !budget.admit_item(&letter) {
                more = true;
                break;
            }
            page.push(letter);
        }
        let next = page.last().filter(|_| more).map(|l| LetterCursor {
            at: l.first_failure_at,
            id: l.id.clone(),
        });
        Ok((page, next))
    }

    /// The letter `id` of `tenant` (`None`: of any tenant).
    pub async fn get(&self, tenant: Option<&str>, id: &str) -> Result<DeadLetter, DlqError> {
        self.letters
            .get(tenant, id)
            .await?
            .ok_or_else(|| DlqError::Store(DeadLetterError::NotFound(id.to_owned())))
    }

    /// Sends the open letter `id` back to its consumer, with every open letter of its stream
    /// that the send covers (the consumer's checkpoints make it exactly once, in order), and
    /// marks them redriven by `by`.
    pub async fn redrive(
        &self,
        tenant: Option<&str>,
        id: &str,
        by: &str,
    ) -> Result<Redriven, DlqError> {
        let tenant = match tenant {
            Some(t) => t.to_owned(),
            None => self.get(None, id).await?.tenant,
        };
        let plan = redrive_plan(&*self.letters, &tenant, id).await?;
        let send = &plan.send;
        if send.consumer == STREAM_CONSUMER {
            let (Some(stream_id), Some(first), Some(last)) =
                (&send.stream_id, send.first_version, send.last_version)
            else {
                return Err(DlqError::CannotRedrive(
                    "the batch's commits are unknown (its stream records were no longer readable): rebuild the views, then discard it".to_owned(),
                ));
            };
            let key = CommitKey {
                stream_id: stream_id.clone(),
                version: first,
                count: last + 1 - first,
            };
            if let Some((_, failure)) = self.republish(std::slice::from_ref(&key), None).await.pop()
            {
                return Err(DlqError::Republish(failure));
            }
        } else {
            let queue = self.sources.queue_of(&send.consumer).ok_or_else(|| {
                DlqError::CannotRedrive(format!("no queue for consumer {}", send.consumer))
            })?;
            let group = send
                .attributes
                .get("MessageGroupId")
                .cloned()
                .or_else(|| send.stream_id.as_deref().map(group_id));
            let dedup = format!("redrive-{}-{}", send.id, Utc::now().timestamp_millis());
            self.queues
                .send(queue, &send.body, group.as_deref(), &dedup)
                .await
                .map_err(DlqError::Send)?;
        }
        let change = Change {
            to: Status::Redriven,
            by: by.to_owned(),
            reason: Some(format!("redriven with {}", send.id)),
            at: Utc::now(),
        };
        let mut redriven = Vec::new();
        for l in &plan.covers {
            match self.letters.change(&tenant, &l.id, &change).await {
                Ok(_) => redriven.push(l.id.clone()),
                // Another redrive closed it meanwhile: the send covered it anyway.
                Err(DeadLetterError::NotOpen { .. }) if l.id != id => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Redriven {
            sent: send.id.clone(),
            redriven,
        })
    }

    /// Redrives every open letter (of `consumer`, when given) of every tenant; returns what
    /// each redrive did, and the letters that could not be redriven with why.
    pub async fn redrive_all(
        &self,
        consumer: Option<&str>,
        by: &str,
    ) -> Result<(Vec<Redriven>, Vec<(String, String)>), DlqError> {
        let filter = Filter {
            consumer: consumer.map(str::to_owned),
            status: Some(Status::Open),
            stream_id: None,
        };
        let open = self.letters.list(None, &filter, usize::MAX).await?;
        let mut done: BTreeSet<String> = BTreeSet::new();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for l in open {
            if done.contains(&l.id) {
                continue;
            }
            match self.redrive(Some(&l.tenant), &l.id, by).await {
                Ok(r) => {
                    done.extend(r.redriven.iter().cloned());
                    ok.push(r);
                }
                Err(e) => failed.push((l.id.clone(), chain(&e))),
            }
        }
        Ok((ok, failed))
    }

    /// Gives up on the open letter `id` for `reason`.
    pub async fn discard(
        &self,
        tenant: Option<&str>,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<DeadLetter, DlqError> {
        let tenant = match tenant {
            Some(t) => t.to_owned(),
            None => self.get(None, id).await?.tenant,
        };
        let change = Change {
            to: Status::Discarded,
            by: by.to_owned(),
            reason: Some(reason.to_owned()),
            at: Utc::now(),
        };
        Ok(self.letters.change(&tenant, id, &change).await?)
    }

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
                let mut after = None;
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
                        "cursor" => {
                            after = Some(LetterCursor::decode(value).ok_or_else(|| {
                                Problem::bad_request(
                                    "invalid-cursor",
                                    "cursor is not one this API issued",
                                )
                            })?);
                        }
                        other => return Err(invalid(format!("no parameter '{other}'"))),
                    }
                }
                let (items, next) = self
                    .page(tenant, &filter, after.as_ref(), limit)
                    .await
                    .map_err(problem)?;
                let next = next.map(|c| c.encode());
                Ok(json_response(200, &json!({ "items": items, "next": next })))
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
