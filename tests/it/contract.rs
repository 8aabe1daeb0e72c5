//! `infra/openapi.yaml` against `infra/template.yaml`: the contract's operations are exactly
//! the HTTP API's routes. Each documented `METHOD path` is served by one template route (a
//! documented path may be a concrete instance of a route's `{param}`, as each view is of
//! `/queries/{view}`), and every template route is documented.

use serde_json::Value;
use std::path::Path;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// Whether the template path `route` serves the documented path `documented` (a `{param}`
/// segment of the route takes any one non-empty segment, a `{param}` of the contract too).
fn serves(route: &str, documented: &str) -> bool {
    let (want, have): (Vec<&str>, Vec<&str>) = (
        route.trim_matches('/').split('/').collect(),
        documented.trim_matches('/').split('/').collect(),
    );
    want.len() == have.len()
        && want
            .iter()
            .zip(&have)
            .all(|(w, h)| (w.starts_with('{') && w.ends_with('}') && !h.is_empty()) || w == h)
}

#[test]
fn the_contracts_operations_are_the_templates_routes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template =
        eventfold_local::Template::load(&root.join("infra/template.yaml"), "test", "us-east-1")
            .expect("template loads");
    let routes: Vec<(String, String)> = template
        .functions()
        .into_iter()
        .flat_map(|f| f.routes)
        .map(|r| (r.method, r.path))
        .collect();
    assert!(!routes.is_empty());
    let text = std::fs::read_to_string(root.join("infra/openapi.yaml")).expect("contract");
    let contract: Value = serde_yaml_ng::from_str(&text).expect("contract parses");
    let mut operations = Vec::new();
    for (path, item) in contract["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    for (method, path) in &operations {
        let serving: Vec<&(String, String)> = routes
            .iter()
            .filter(|(m, p)| (m == method || m == "ANY") && serves(p, path))
            .collect();
        assert_eq!(
            serving.len(),
            1,
            "{method} {path} is documented but served by {serving:?}"
        );
    }
    for (method, path) in &routes {
        assert!(
            operations
                .iter()
                .any(|(m, p)| (m == method || method == "ANY") && serves(path, p)),
            "route {method} {path} of the template is not in infra/openapi.yaml"
        );
    }
}

#[test]
fn a_concrete_path_is_served_by_its_templated_route_only() {
    assert!(serves("/q/{view}", "/q/order-summary"));
    assert!(serves("/a/{t}/{id}", "/a/{t}/{id}"));
    assert!(!serves("/a/{t}/{id}", "/a/{t}/{id}/events"));
    assert!(!serves("/q/{view}", "/r/order-summary"));
}
