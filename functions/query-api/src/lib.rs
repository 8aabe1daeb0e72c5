//! The query API: `GET /api/v1/events/queries/{view}` over the read models, with cursor paging.
//!
//! Owns the HTTP surface of the views (which parameters each view takes, single lookups vs.
//! lists). The views themselves are defined in `shop::views`; storage is a
//! [`ReadModelStore`] (DynamoDB in Lambda, memory in unit tests); the error mapping is
//! `eventfold-aws::http`. `main.rs` only wires config and clients to [`QueryService`].
#![forbid(unsafe_code)]

use eventfold::projection::{Doc, ListQuery, ReadModelError, ReadModelStore};
use eventfold_aws::SdkConfig;
use eventfold_aws::config::ConfigError;
use eventfold_aws::http::{Problem, caller, correlation_id, json_response};
use eventfold_aws::readmodels::DynamoReadModelStore;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};
use tracing::Instrument;

/// Default page size of lists.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size of lists.
pub const MAX_LIMIT: usize = 100;

const PREFIX: &str = "/api/v1/events/queries/";

/// Settings of the query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConfig {
    /// The read-models table (`READ_MODELS_TABLE`).
    pub read_models_table: String,
}

impl QueryConfig {
    /// Reads the settings through `lookup` (process environment, or a template's function
    /// environment locally).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let read_models_table = lookup("READ_MODELS_TABLE")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing("READ_MODELS_TABLE"))?;
        Ok(Self { read_models_table })
    }
}

/// The query API on DynamoDB.
pub type QueryApi = QueryService<DynamoReadModelStore>;

/// Builds the query API on the read-models table of `config`.
pub fn dynamo_api(sdk: &SdkConfig, config: &QueryConfig) -> QueryApi {
    QueryService::new(DynamoReadModelStore::from_sdk(
        sdk,
        &config.read_models_table,
    ))
}

/// How a view is queried.
struct ViewSpec {
    /// Name in the URL.
    name: &'static str,
    /// The stored view it reads.
    stored: &'static str,
    /// Parameter naming one document (a lookup), if the view has one.
    key: Option<&'static str>,
    /// Parameter naming an index partition (a required list filter), if any.
    partition: Option<&'static str>,
    /// Field under which the document key is shown when the document lacks it.
    key_field: &'static str,
}

const VIEWS: &[ViewSpec] = &[
    ViewSpec {
        name: shop::views::ORDER_SUMMARY,
        stored: shop::views::ORDER_SUMMARY,
        key: Some("order_id"),
        partition: None,
        key_field: "order_id",
    },
    ViewSpec {
        name: shop::views::ORDERS_BY_CUSTOMER,
        stored: shop::views::ORDER_SUMMARY,
        key: None,
        partition: Some("customer_id"),
        key_field: "order_id",
    },
    ViewSpec {
        name: shop::views::STOCK_LEVELS,
        stored: shop::views::STOCK_LEVELS,
        key: Some("sku"),
        partition: None,
        key_field: "sku",
    },
    ViewSpec {
        name: shop::views::DAILY_SALES,
        stored: shop::views::DAILY_SALES,
        key: Some("day"),
        partition: None,
        key_field: "day",
    },
];

fn valid_param(name: &str, value: &str) -> Result<(), Problem> {
    let ok = match name {
        "day" => value.len() == 10 && chrono_like_day(value),
        _ => {
            (1..=128).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::bad_request(
            "invalid-request",
            format!("parameter '{name}' has an invalid value"),
        ))
    }
}

fn chrono_like_day(v: &str) -> bool {
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10) && {
        let month: u32 = v[5..7].parse().unwrap_or(0);
        let day: u32 = v[8..10].parse().unwrap_or(0);
        (1..=12).contains(&month) && (1..=31).contains(&day)
    }
}

fn present(spec: &ViewSpec, doc: Doc) -> Value {
    let mut data = doc.data;
    if let Value::Object(map) = &mut data
        && !map.contains_key(spec.key_field)
    {
        map.insert(spec.key_field.to_owned(), Value::String(doc.key));
    }
    data
}

fn store_problem(e: ReadModelError) -> Problem {
    match e {
        ReadModelError::InvalidCursor => {
            Problem::bad_request("invalid-request", "cursor is not one this API issued")
        }
        ReadModelError::Unavailable(_) | ReadModelError::Conflict { .. } => Problem::new(
            503,
            "unavailable",
            "Service unavailable",
            "the read models are unavailable; retry later",
        ),
        ReadModelError::Corrupt(m) => Problem::new(
            500,
            "internal",
            "Internal error",
            format!("unreadable read model: {m}"),
        ),
    }
}

/// The query API over any read-model store.
#[derive(Debug)]
pub struct QueryService<R> {
    models: R,
}

impl<R: ReadModelStore> QueryService<R> {
    /// A query API reading `models`.
    pub fn new(models: R) -> Self {
        Self { models }
    }

    /// Handles one HTTP request. Never fails: every outcome is a response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let correlation = correlation_id(&req);
        let span = tracing::info_span!("query", path = %path, correlation_id = %correlation);
        async {
            match self.dispatch(&req).await {
                Ok(resp) => resp,
                Err(problem) => problem.into_response(&path),
            }
        }
        .instrument(span)
        .await
    }

    async fn dispatch(&self, req: &Request) -> Result<Response<Body>, Problem> {
        let caller = caller(req)?;
        let Some(view) = req
            .uri()
            .path()
            .strip_prefix(PREFIX)
            .map(|v| v.trim_end_matches('/'))
        else {
            return Err(Problem::not_found("no such route"));
        };
        if req.method().as_str() != "GET" {
            return Err(Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
                "only GET is allowed here",
            ));
        }
        caller.require("events:read")?;
        let spec = VIEWS
            .iter()
            .find(|s| s.name == view)
            .ok_or_else(|| Problem::not_found(format!("unknown view '{view}'")))?;
        let params = req.query_string_parameters();
        for (name, _) in params.iter() {
            let known = ["limit", "cursor"].contains(&name)
                || Some(name) == spec.key
                || Some(name) == spec.partition;
            if !known {
                return Err(Problem::bad_request(
                    "invalid-request",
                    format!("view '{view}' takes no parameter '{name}'"),
                ));
            }
        }
        let tenant = caller.tenant.as_str();
        if let Some(key_param) = spec.key
            && let Some(key) = params.first(key_param)
        {
            valid_param(key_param, key)?;
            let doc = self
                .models
                .get(tenant, spec.stored, key)
                .await
                .map_err(store_problem)?;
            return match doc.filter(|d| !d.data.is_null()) {
                Some(d) => Ok(json_response(
                    200,
                    &json!({"view": spec.name, "item": present(spec, d)}),
                )),
                None => Err(Problem::not_found(format!(
                    "no {} for {key_param} '{key}'",
                    spec.name
                ))),
            };
        }
        let index = match spec.partition {
            Some(p) => {
                let value = params.first(p).ok_or_else(|| {
                    Problem::bad_request(
                        "invalid-request",
                        format!("view '{view}' needs parameter '{p}'"),
                    )
                })?;
                valid_param(p, value)?;
                Some(value.to_owned())
            }
            None => None,
        };
        let limit = match params.first("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    Problem::bad_request(
                        "invalid-request",
                        format!("limit must be 1..={MAX_LIMIT}"),
                    )
                })?,
        };
        let query = ListQuery {
            index,
            cursor: params.first("cursor").map(str::to_owned),
            limit,
        };
        let page = self
            .models
            .list(tenant, spec.stored, query)
            .await
            .map_err(store_problem)?;
        let items: Vec<Value> = page.docs.into_iter().map(|d| present(spec, d)).collect();
        Ok(json_response(
            200,
            &json!({"view": spec.name, "items": items, "next": page.next}),
        ))
    }
}
