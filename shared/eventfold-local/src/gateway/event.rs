//! The API Gateway HTTP API event (payload format 2.0) for a request, filled as API Gateway
//! fills it: `routeKey` as the template declares the route (top level and in
//! `requestContext`), `rawPath` and `rawQueryString` as received, `pathParameters` and
//! `queryStringParameters` decoded (repeated query keys joined with commas), header values
//! of a repeated header joined with commas, cookies in `cookies` rather than in a header,
//! a text body as is and any other body base64-encoded.

use super::routes::Route;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Account id in `requestContext.accountId`.
const LOCAL_ACCOUNT: &str = crate::template::LOCAL_ACCOUNT;

/// Adds `value` under `key`, joined with a comma to what is there, as API Gateway merges
/// repeated headers and query parameters.
fn join_into(map: &mut Map<String, Value>, key: String, value: String) {
    match map.get_mut(&key) {
        Some(Value::String(s)) => {
            s.push(',');
            s.push_str(&value);
        }
        _ => {
            map.insert(key, Value::String(value));
        }
    }
}

/// `queryStringParameters` of a raw query string: form-decoded (`+` is a space), repeated
/// keys joined with commas.
pub(crate) fn query_parameters(raw_query: &str) -> Map<String, Value> {
    let mut query = Map::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        join_into(&mut query, k.into_owned(), v.into_owned());
    }
    query
}

/// The payload 2.0 event for `req` on `route`, as Lambda would receive it.
pub(crate) fn api_gateway_v2_event(
    req: &hyper::Request<Bytes>,
    route: &Route,
    params: &BTreeMap<String, String>,
    claims: &crate::jwt::Claims,
    peer: SocketAddr,
) -> Value {
    let mut headers = Map::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::COOKIE {
            cookies.extend(
                v.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
        } else {
            join_into(&mut headers, name.as_str().to_owned(), v);
        }
    }
    let raw_query = req.uri().query().unwrap_or("");
    let query = query_parameters(raw_query);
    let body = req.body();
    let (body, b64) = match std::str::from_utf8(body) {
        Ok(t) => (t.to_owned(), false),
        Err(_) => (STANDARD.encode(body), true),
    };
    let now = chrono::Utc::now();
    let route_key = route.key();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": req.uri().path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "pathParameters": if params.is_empty() { Value::Null } else { json!(params) },
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": "local",
            "authorizer": {"jwt": {"claims": claims, "scopes": null}},
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::now_v7().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": if body.is_empty() { Value::Null } else { Value::String(body) },
        "isBase64Encoded": b64,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::routes::select;
    use crate::template::RouteSpec;
    use lambda_http::RequestExt;

    fn routes() -> Vec<Route> {
        [
            (
                "GET",
                "/api/v1/events/aggregates/{aggregate_type}/{aggregate_id}",
            ),
            ("GET", "/api/v1/events/queries/{view}"),
            ("POST", "/api/v1/events/commands"),
        ]
        .into_iter()
        .map(|(m, p)| Route {
            spec: RouteSpec {
                method: m.into(),
                path: p.into(),
            },
            function: "F".into(),
        })
        .collect()
    }

    fn event_for(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Value {
        let mut b = hyper::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Bytes::from(body.to_vec())).expect("request");
        let routes = routes();
        let (route, params) = select(&routes, method, req.uri().path()).expect("a route");
        let claims = crate::jwt::Claims::from([("sub".to_owned(), "alice".to_owned())]);
        api_gateway_v2_event(
            &req,
            route,
            &params,
            &claims,
            "127.0.0.1:9".parse().expect("addr"),
        )
    }

    #[test]
    fn route_key_and_decoded_path_parameters() {
        let e = event_for("GET", "/api/v1/events/aggregates/Order/o%2D1", &[], b"");
        let key = "GET /api/v1/events/aggregates/{aggregate_type}/{aggregate_id}";
        assert_eq!(e["routeKey"], key);
        assert_eq!(e["requestContext"]["routeKey"], key);
        assert_eq!(e["rawPath"], "/api/v1/events/aggregates/Order/o%2D1");
        assert_eq!(
            e["pathParameters"],
            json!({"aggregate_type": "Order", "aggregate_id": "o-1"})
        );
        let e = event_for("GET", "/api/v1/events/aggregates/Order/a%20b", &[], b"");
        assert_eq!(e["pathParameters"]["aggregate_id"], "a b");
        assert_eq!(e["queryStringParameters"], Value::Null);
        assert_eq!(e["rawQueryString"], "");
        assert_eq!(e["body"], Value::Null);
        assert_eq!(
            e["requestContext"]["authorizer"]["jwt"]["claims"]["sub"],
            "alice"
        );
    }

    #[test]
    fn query_strings_are_decoded_and_repeated_keys_joined() {
        let raw = "order_id=o%2D1&tag=a&tag=b+c&q=x%20y&plus=1%2B1&flag&bad=%zz";
        let e = event_for(
            "GET",
            &format!("/api/v1/events/queries/order-summary?{raw}"),
            &[],
            b"",
        );
        assert_eq!(e["rawQueryString"], raw);
        assert_eq!(
            e["queryStringParameters"],
            json!({
                "order_id": "o-1", "tag": "a,b c", "q": "x y", "plus": "1+1",
                "flag": "", "bad": "%zz",
            })
        );
        assert_eq!(e["pathParameters"], json!({"view": "order-summary"}));
    }

    #[test]
    fn headers_cookies_and_bodies_as_api_gateway_sends_them() {
        let e = event_for(
            "POST",
            "/api/v1/events/commands",
            &[
                ("x-a", "1"),
                ("x-a", "2"),
                ("cookie", "s=1; t=2"),
                ("user-agent", "ua"),
            ],
            b"{}",
        );
        assert_eq!(e["headers"]["x-a"], "1,2");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(e["body"], "{}");
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["requestContext"]["http"]["userAgent"], "ua");
        let binary = event_for("POST", "/api/v1/events/commands", &[], &[0xff, 0x00]);
        assert_eq!(binary["isBase64Encoded"], true);
        assert_eq!(binary["body"], "/wA=");
    }

    #[test]
    fn lambda_http_reads_the_event_back() {
        let e = event_for(
            "GET",
            "/api/v1/events/aggregates/Order/o%2D1?version=2&tag=a&tag=b",
            &[("cookie", "s=1")],
            b"",
        );
        let req = lambda_http::request::from_str(&e.to_string()).expect("a lambda_http request");
        assert_eq!(req.uri().path(), "/api/v1/events/aggregates/Order/o%2D1");
        assert_eq!(
            req.path_parameters_ref()
                .and_then(|p| p.first("aggregate_id")),
            Some("o-1")
        );
        let query = req.query_string_parameters();
        assert_eq!(query.first("version"), Some("2"));
        assert_eq!(query.all("tag"), Some(vec!["a", "b"]));
        assert_eq!(
            req.headers().get("cookie").and_then(|v| v.to_str().ok()),
            Some("s=1")
        );
        match req.request_context() {
            lambda_http::request::RequestContext::ApiGatewayV2(c) => assert_eq!(
                c.route_key.as_deref(),
                Some("GET /api/v1/events/aggregates/{aggregate_type}/{aggregate_id}")
            ),
            other => panic!("not an HTTP API request: {other:?}"),
        }
    }
}
