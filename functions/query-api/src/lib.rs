//! The query API: `GET /api/v1/events/queries/{view}` over the read models, with cursor paging.
//!
//! Owns the HTTP surface of the views: parameter checks, single lookups vs. lists, paging
//! (a page stops at `limit` documents or at a byte budget that keeps the answer under
//! Lambda's 6 MB response limit, whichever comes first).
//! Which views exist is `shop::registry::VIEWS`; which parameters each takes is this crate's
//! [`params`] (one row per view); the route is the one API Gateway matched (`routeKey` and the `view` path
//! parameter, as the template's `HttpApi` event declares it), never the raw path parsed
//! again. Storage is a [`ReadModelStore`] (DynamoDB in Lambda, memory in unit tests); the
//! error mapping is `eventfold-aws::http`. [`build`] is the function's one constructor;
//! `main.rs` and the local stack both run what it builds.
//!
//! **Versions.** A view's documents live under a version
//! (`eventfold_consumers::projection::versions`); each request reads the view's pointer (one
//! consistent `GetItem`, not cached) and then the live version's documents, and says which
//! version answered in the `Eventfold-View-Version` header. Why no request sees a missing
//! or half-built view across a rebuild's promote:
//!
//! - a version becomes live only by the promote, after its rebuild replayed every stream and
//!   was verified; from its registration on the projector applied every notification to it,
//!   so it is complete and current when the pointer names it;
//! - the promote is one conditional write of the pointer, and the read is strongly
//!   consistent, so a request that starts after the write reads the new version, and every
//!   later request too: no reader goes back to the old one (a cache per instance would let
//!   two instances disagree for its lifetime, and a reader bounce between versions);
//! - a request that read the pointer just before the write reads the old version, which
//!   stays active (kept current by the projector) until it is retired, not before the grace
//!   period after the promote, longer than a request can take (the function's timeout);
//! - the projector applies each notification to the newer version first, so what a reader
//!   saw in the old version is already in the new one when it switches;
//! - a list's cursor names the version it was read from (`v{N}_…`), and a listing goes on
//!   in that version while it is live or retiring, so paging across the flip neither fails
//!   nor skips; only a cursor of a retired version is refused (`invalid-cursor`).
//!
//! The cost is one small read per request (0.5 to 1 read unit).
#![forbid(unsafe_code)]

use eventfold_aws::config::ConfigError;
use eventfold_aws::http::{PAGE_BYTES, Problem, caller, correlation_id, json_response, route_key};
use eventfold_aws::read_models::DynamoReadModelStore;
use eventfold_aws::warmup::Warmed;
use eventfold_aws::{DynamoDbTable, SdkConfig};
use eventfold_consumers::projection::{
    Doc, ListQuery, ReadModelError, ReadModelStore, stored_name,
};
use lambda_http::{Body, Request, RequestExt, Response};
use params::{Param, ViewQuery};
use serde_json::{Value, json};
use shop::registry::{self, ViewSpec};
use tracing::Instrument;

pub mod params;

/// Default page size of lists.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size of lists.
pub const MAX_LIMIT: usize = 100;
/// Response header naming the version of the view that answered.
pub const VERSION_HEADER: &str = "eventfold-view-version";

/// Route key of a view query.
pub const GET_QUERY: &str = "GET /api/v1/events/queries/{view}";
/// Every route key this function serves (the template's `HttpApi` events of `QueryApiFunction`).
pub const ROUTE_KEYS: &[&str] = &[GET_QUERY];

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

/// The function as its `main.rs` and the local stack run it: the query API on the
/// read-models table, and the endpoint it warms at init. Built by [`build`].
#[derive(Debug)]
pub struct Function {
    api: QueryApi,
}

/// The function's one constructor: reads its settings through `env` once
/// (`READ_MODELS_TABLE`: the process environment in Lambda, the template's resolved
/// environment locally) and builds its client from `sdk`.
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Function, ConfigError> {
    let config = QueryConfig::from_lookup(env)?;
    Ok(Function {
        api: QueryService::new(DynamoReadModelStore::from_sdk(
            sdk,
            config.read_models_table,
        )),
    })
}

impl Function {
    /// Handles one HTTP request (see [`QueryService::handle`]).
    pub async fn handle(&self, req: Request) -> Response<Body> {
        self.api.handle(req).await
    }

    /// Warms the endpoint the requests use (the read-models table) at init.
    pub async fn warm_up(&self, sdk: &SdkConfig) -> Vec<Warmed> {
        let models = self.api.models().table();
        eventfold_aws::warm_up(sdk, &[&DynamoDbTable::keyed(models)]).await
    }
}

fn valid_param(param: Param, value: &str) -> Result<(), Problem> {
    if param.format.accepts(value) {
        Ok(())
    } else {
        Err(Problem::bad_request(
            "invalid-request",
            format!("parameter '{}' has an invalid value", param.name),
        ))
    }
}

/// The view named by the route API Gateway matched; `None` for a route this function does
/// not serve.
fn routed_view(req: &Request) -> Option<&str> {
    match route_key(req)? {
        GET_QUERY => req.path_parameters_ref()?.first("view"),
        _ => None,
    }
}

fn present(query: &ViewQuery, doc: Doc) -> Value {
    let mut data = doc.data;
    if let Value::Object(map) = &mut data
        && !map.contains_key(query.key_field)
    {
        map.insert(query.key_field.to_owned(), Value::String(doc.key));
    }
    data
}

/// `response` with the header naming the view version that answered.
fn versioned(mut response: Response<Body>, version: u32) -> Response<Body> {
    response.headers_mut().insert(
        VERSION_HEADER,
        lambda_http::http::HeaderValue::from(version),
    );
    response
}

/// The view served as `name`, with its query parameters.
fn served(name: &str) -> Option<(&'static ViewSpec, &'static ViewQuery)> {
    Some((registry::view(name)?, params::query(name)?))
}

fn store_problem(e: ReadModelError) -> Problem {
    match e {
        ReadModelError::InvalidCursor => invalid_cursor(),
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
        ReadModelError::Refused(cause) => Problem::new(
            500,
            "internal",
            "Internal error",
            format!("unreadable read model: {cause}"),
        ),
    }
}

/// Longest cursor accepted (the store's are far shorter).
pub const MAX_CURSOR_LEN: usize = 2048;

fn invalid_cursor() -> Problem {
    Problem::bad_request("invalid-cursor", "cursor is not one this API issued")
}

/// The cursor this API issues: the version the page was read from, then the store's cursor
/// after it (`v{version}_{store cursor}`; a store's cursor is URL-safe base64 of a JSON
/// object, so it never starts with `v`).
fn issue_cursor(version: u32, store: &str) -> String {
    format!("v{version}_{store}")
}

/// The version a cursor was issued for (none in a cursor from before versions), and the
/// store's cursor in it.
fn read_cursor(cursor: &str) -> (Option<u32>, &str) {
    if let Some(rest) = cursor.strip_prefix('v')
        && let Some((n, store)) = rest.split_once('_')
        && let Ok(version) = n.parse::<u32>()
        && !store.is_empty()
    {
        return (Some(version), store);
    }
    (None, cursor)
}

/// A cursor's shape: the URL-safe base64 the stores issue, with the version's prefix. Checked before a lookup too,
/// which ignores the cursor, so that what is refused does not depend on the other
/// parameters.
fn cursor_shape(cursor: &str) -> Result<&str, Problem> {
    let ok = (1..=MAX_CURSOR_LEN).contains(&cursor.len())
        && cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(cursor)
    } else {
        Err(invalid_cursor())
    }
}

/// The query API over any read-model store.
#[derive(Debug)]
pub struct QueryService<R> {
    models: R,
    /// The byte budget of a list page ([`PAGE_BYTES`] unless set).
    page_bytes: usize,
}

impl<R: ReadModelStore> QueryService<R> {
    /// A query API reading `models`.
    pub fn new(models: R) -> Self {
        Self {
            models,
            page_bytes: PAGE_BYTES,
        }
    }

    /// Sets the byte budget of a list page (in [`eventfold::wire_len`] bytes), for tests
    /// that page through small documents; a budget over [`PAGE_BYTES`] risks answers past
    /// Lambda's response limit.
    pub fn with_page_bytes(mut self, page_bytes: usize) -> Self {
        self.page_bytes = page_bytes;
        self
    }

    /// The read-model store.
    pub fn models(&self) -> &R {
        &self.models
    }

    /// Handles one HTTP request. Never fails: every outcome is a response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let correlation = correlation_id(&req);
        let route = route_key(&req).unwrap_or("-");
        let span = tracing::info_span!("query", route = %route, path = %path, correlation_id = %correlation);
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
        let Some(view) = routed_view(req) else {
            return Err(Problem::not_found("no such route"));
        };
        caller.require("events:read")?;
        let (spec, query) =
            served(view).ok_or_else(|| Problem::not_found(format!("unknown view '{view}'")))?;
        let params = req.query_string_parameters();
        for (name, _) in params.iter() {
            let known = ["limit", "cursor"].contains(&name)
                || query.key.is_some_and(|p| p.name == name)
                || query.partition.is_some_and(|p| p.name == name);
            if !known {
                return Err(Problem::bad_request(
                    "invalid-request",
                    format!("view '{view}' takes no parameter '{name}'"),
                ));
            }
        }
        // Checked before a lookup, which ignores them, so that a bad value is refused the
        // same way with or without a key.
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
        let cursor = params.first("cursor").map(cursor_shape).transpose()?;
        let tenant = caller.tenant.as_str();
        if let Some(key_param) = query.key
            && let Some(key) = params.first(key_param.name)
        {
            valid_param(key_param, key)?;
            let (version, stored) = self.live(spec).await?;
            let doc = self
                .models
                .get(tenant, &stored, key)
                .await
                .map_err(store_problem)?;
            return match doc.filter(|d| !d.data.is_null()) {
                Some(d) => {
                    let mut item = [present(query, d)];
                    self.join(tenant, spec, &mut item).await?;
                    let [item] = item;
                    Ok(versioned(
                        json_response(200, &json!({"view": spec.name, "item": item})),
                        version,
                    ))
                }
                None => Err(Problem::not_found(format!(
                    "no {} for {} '{key}'",
                    spec.name, key_param.name
                ))),
            };
        }
        let index = match query.partition {
            Some(p) => {
                let value = params.first(p.name).ok_or_else(|| {
                    Problem::bad_request(
                        "invalid-request",
                        format!("view '{view}' needs parameter '{}'", p.name),
                    )
                })?;
                valid_param(p, value)?;
                Some(value.to_owned())
            }
            None => None,
        };
        let pointer = self
            .models
            .pointer(spec.stored())
            .await
            .map_err(store_problem)?;
        let (from, store_cursor) = match cursor.map(read_cursor) {
            Some((from, store)) => (from, Some(store.to_owned())),
            None => (None, None),
        };
        // A cursor goes on in the version it was read from while that version is kept
        // current (live, or retiring after a promote), so a listing that spans the flip
        // neither fails nor skips; once retired, its cursors are refused.
        let version = match from {
            None => pointer.live,
            Some(v) if v == pointer.live || Some(v) == pointer.retiring => v,
            Some(_) => return Err(invalid_cursor()),
        };
        let stored = stored_name(spec.stored(), version);
        let list = ListQuery {
            index,
            cursor: store_cursor,
            limit,
        };
        let (mut items, next) = self.page(tenant, &stored, query, list).await?;
        self.join(tenant, spec, &mut items).await?;
        let next = next.map(|n| issue_cursor(version, &n));
        Ok(versioned(
            json_response(
                200,
                &json!({"view": spec.name, "items": items, "next": next}),
            ),
            version,
        ))
    }

    /// Adds `spec`'s join ([`shop::views::Join`]: a customer's name and email in order
    /// documents) to `items`: one read of the joined view's pointer and one read per
    /// distinct key of the page. The copied fields are short texts (at most 500 characters
    /// each), so a page that fit its byte budget keeps well within Lambda's answer limit.
    async fn join(
        &self,
        tenant: &str,
        spec: &ViewSpec,
        items: &mut [Value],
    ) -> Result<(), Problem> {
        let Some(join) = spec.join else {
            return Ok(());
        };
        let Some(joined) = registry::view(join.view) else {
            return Ok(());
        };
        let (_, stored) = self.live(joined).await?;
        let keys: std::collections::BTreeSet<String> = items
            .iter()
            .filter_map(|i| join.key_of(i).map(str::to_owned))
            .collect();
        let mut docs = std::collections::BTreeMap::new();
        for key in keys {
            let doc = self
                .models
                .get(tenant, &stored, &key)
                .await
                .map_err(store_problem)?;
            if let Some(doc) = doc.filter(|d| !d.data.is_null()) {
                docs.insert(key, doc.data);
            }
        }
        for item in items.iter_mut() {
            let found = join.key_of(item).and_then(|k| docs.get(k)).cloned();
            join.apply(item, found.as_ref());
        }
        Ok(())
    }

    /// The live version of `spec`'s stored view and the name its documents are stored
    /// under, from the view's pointer as it is now (see the module docs).
    async fn live(&self, spec: &ViewSpec) -> Result<(u32, String), Problem> {
        let pointer = self
            .models
            .pointer(spec.stored())
            .await
            .map_err(store_problem)?;
        Ok((pointer.live, stored_name(spec.stored(), pointer.live)))
    }

    /// A page of the list within the byte budget ([`eventfold::PageBudget`]), and the
    /// store's cursor after it. A page past the budget is asked again for the count that
    /// fits, so the cursor stays the store's own, after exactly those documents (the store
    /// cannot cut a read where it likes: DynamoDB's cursor is its `LastEvaluatedKey`). The
    /// count falls on each try and one document always fits, so this ends; a second read is
    /// paid only by a page of large documents.
    async fn page(
        &self,
        tenant: &str,
        stored: &str,
        query: &ViewQuery,
        mut list: ListQuery,
    ) -> Result<(Vec<Value>, Option<String>), Problem> {
        loop {
            let page = self
                .models
                .list(tenant, stored, list.clone())
                .await
                .map_err(store_problem)?;
            let items: Vec<Value> = page.docs.into_iter().map(|d| present(query, d)).collect();
            let fits = eventfold::page::fitting(&items, self.page_bytes);
            if fits == items.len() {
                return Ok((items, page.next));
            }
            list.limit = fits;
        }
    }
}
