//! Route selection as the HTTP API does it: path templates with `{param}` and a trailing
//! greedy `{param+}`, the most specific matching route winning, path parameters
//! percent-decoded (the raw path is matched segment by segment, so an encoded `/` stays
//! inside its parameter).

use crate::template::RouteSpec;
use percent_encoding::percent_decode_str;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// A route of the HTTP API and the function it sends to.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) spec: RouteSpec,
    pub(crate) function: String,
}

impl Route {
    /// `METHOD /path/{param}`, as the template declares it: the event's `routeKey`.
    pub(crate) fn key(&self) -> String {
        format!("{} {}", self.spec.method, self.spec.path)
    }

    /// How specific the route is: a route without a greedy parameter beats one with; then
    /// more literal segments win; then a named method beats `ANY`.
    fn specificity(&self) -> (bool, usize, bool) {
        let segments: Vec<&str> = self.spec.path.trim_matches('/').split('/').collect();
        let greedy = segments
            .iter()
            .any(|s| s.starts_with('{') && s.ends_with("+}"));
        let literal = segments.iter().filter(|s| !s.starts_with('{')).count();
        (!greedy, literal, self.spec.method != "ANY")
    }
}

fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// The path parameters of `raw_path` under the path template `template`, decoded; `None`
/// when the path does not match.
pub(crate) fn match_path(template: &str, raw_path: &str) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut want = template.trim_matches('/').split('/');
    let mut have = raw_path.trim_matches('/').split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with("+}") && !h.is_empty() => {
                let rest: Vec<&str> = std::iter::once(h).chain(have.by_ref()).collect();
                params.insert(w[1..w.len() - 2].to_owned(), decode(&rest.join("/")));
                return want.next().is_none().then_some(params);
            }
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with('}') && !h.is_empty() => {
                params.insert(w[1..w.len() - 1].to_owned(), decode(h));
            }
            (Some(w), Some(h)) if w == decode(h) => {}
            _ => return None,
        }
    }
}

/// The most specific of `routes` matching `method` and `raw_path` (the first declared among
/// equals), with its decoded path parameters.
pub(crate) fn select<'a>(
    routes: &'a [Route],
    method: &str,
    raw_path: &str,
) -> Option<(&'a Route, BTreeMap<String, String>)> {
    routes
        .iter()
        .filter(|r| r.spec.method == "ANY" || r.spec.method == method)
        .filter_map(|r| match_path(&r.spec.path, raw_path).map(|p| (r, p)))
        .min_by_key(|(r, _)| Reverse(r.specificity()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, function: &str) -> Route {
        Route {
            spec: RouteSpec {
                method: method.into(),
                path: path.into(),
            },
            function: function.into(),
        }
    }

    #[test]
    fn paths_match_templates_and_capture_parameters() {
        let p = match_path("/a/{t}/{id}/events", "/a/Order/o-1/events").expect("matches");
        assert_eq!(p["t"], "Order");
        assert_eq!(p["id"], "o-1");
        assert!(match_path("/a/{t}/{id}", "/a/Order/o-1/events").is_none());
        assert!(match_path("/a/{t}", "/a//").is_none());
        assert!(match_path("/a/{t}", "/b/x").is_none());
        let greedy = match_path("/p/{proxy+}", "/p/x/y").expect("greedy");
        assert_eq!(greedy["proxy"], "x/y");
        assert!(match_path("/p/{proxy+}", "/p").is_none());
    }

    #[test]
    fn path_parameters_are_percent_decoded() {
        let p = match_path("/a/{t}/{id}", "/a/Order/o%2D1").expect("matches");
        assert_eq!(p["id"], "o-1");
        let p = match_path("/a/{id}", "/a/a%20b").expect("matches");
        assert_eq!(p["id"], "a b");
        // A `+` in a path is a plus, not a space (that is query-string form encoding).
        let p = match_path("/a/{id}", "/a/a+b").expect("matches");
        assert_eq!(p["id"], "a+b");
        // An encoded slash stays inside its segment.
        let p = match_path("/a/{id}/events", "/a/x%2Fy/events").expect("matches");
        assert_eq!(p["id"], "x/y");
        let p = match_path("/a/{id}", "/a/caf%C3%A9").expect("matches");
        assert_eq!(p["id"], "café");
        let greedy = match_path("/p/{proxy+}", "/p/a%20b/c").expect("greedy");
        assert_eq!(greedy["proxy"], "a b/c");
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = [
            route("ANY", "/p/{proxy+}", "Proxy"),
            route("GET", "/p/{id}", "ById"),
            route("ANY", "/p/me", "AnyMe"),
            route("GET", "/p/me", "GetMe"),
        ];
        let pick = |m: &str, p: &str| select(&routes, m, p).map(|(r, _)| r.function.clone());
        assert_eq!(pick("GET", "/p/me").as_deref(), Some("GetMe"));
        assert_eq!(pick("POST", "/p/me").as_deref(), Some("AnyMe"));
        assert_eq!(pick("GET", "/p/x").as_deref(), Some("ById"));
        assert_eq!(pick("POST", "/p/x").as_deref(), Some("Proxy"));
        assert_eq!(pick("GET", "/p/x/y").as_deref(), Some("Proxy"));
        assert_eq!(pick("GET", "/q"), None);
        let (r, params) = select(&routes, "GET", "/p/o%2D1").expect("matches");
        assert_eq!(r.key(), "GET /p/{id}");
        assert_eq!(params["id"], "o-1");
    }
}
