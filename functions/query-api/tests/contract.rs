//! `infra/openapi.yaml` against the registry: one operation per view of
//! `shop::registry::VIEWS`, each with exactly the parameters that view takes
//! (`query_api::params`: its key, its partition, `limit`, `cursor`), in the formats the API
//! checks. Adding a view or a parameter without updating the contract fails here.

use query_api::params::{self, ParamFormat};
use query_api::{DEFAULT_LIMIT, MAX_CURSOR_LEN, MAX_LIMIT};
use serde_json::Value;
use shop::registry;
use std::collections::BTreeMap;

const QUERIES: &str = "/api/v1/events/queries/";

fn contract() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("contract readable");
    serde_yaml_ng::from_str(&text).expect("contract parses")
}

fn deref<'a>(contract: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            deref(
                contract,
                contract.pointer(pointer).expect("reference resolves"),
            )
        }
        None => v,
    }
}

#[test]
fn the_contract_has_one_operation_per_registered_view() {
    let c = contract();
    let mut listed: Vec<&str> = c["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter_map(|p| p.strip_prefix(QUERIES))
        .collect();
    let mut registered: Vec<&str> = registry::VIEWS.iter().map(|v| v.name).collect();
    listed.sort_unstable();
    registered.sort_unstable();
    assert_eq!(listed, registered);
}

#[test]
fn each_view_documents_exactly_its_own_parameters() {
    let c = contract();
    for spec in registry::VIEWS {
        let query = params::query(spec.name).expect("every view has its parameters");
        let op = &c["paths"][format!("{QUERIES}{}", spec.name)]["get"];
        let params: BTreeMap<&str, &Value> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| deref(&c, p))
            .inspect(|p| assert_eq!(p["in"], "query", "{}: {p}", spec.name))
            .map(|p| (p["name"].as_str().expect("a name"), p))
            .collect();
        let mut expected: Vec<&str> = vec!["cursor", "limit"];
        expected.extend(
            query
                .key
                .iter()
                .chain(query.partition.iter())
                .map(|p| p.name),
        );
        expected.sort_unstable();
        assert_eq!(
            params.keys().copied().collect::<Vec<_>>(),
            expected,
            "{}: parameters",
            spec.name
        );
        for (param, required) in query
            .key
            .iter()
            .map(|p| (p, false))
            .chain(query.partition.iter().map(|p| (p, true)))
        {
            let documented = params[param.name];
            assert_eq!(documented["required"], required, "{}", param.name);
            let schema = match param.format {
                ParamFormat::Id => "#/components/schemas/Key",
                ParamFormat::Day => "#/components/schemas/Day",
            };
            assert_eq!(documented["schema"]["$ref"], schema, "{}", param.name);
        }
        let limit = deref(&c, &params["limit"]["schema"]);
        assert_eq!(limit["maximum"], MAX_LIMIT);
        assert_eq!(limit["default"], DEFAULT_LIMIT);
        let cursor = deref(&c, &params["cursor"]["schema"]);
        assert_eq!(cursor["maxLength"], MAX_CURSOR_LEN);
        // A lookup answers one item; a list a page.
        let answers = &op["responses"]["200"]["content"]["application/json"]["schema"];
        let lookup = answers["oneOf"].as_array().is_some_and(|v| {
            v.iter()
                .any(|s| s["$ref"] == "#/components/schemas/ViewItem")
        });
        assert_eq!(lookup, query.key.is_some(), "{}: lookup answers", spec.name);
    }
}

#[test]
fn the_documented_formats_are_the_ones_checked() {
    let c = contract();
    let schemas = &c["components"]["schemas"];
    let key = format!("^[A-Za-z0-9_.:-]{{1,{}}}$", shop::MAX_KEY_LEN);
    assert_eq!(schemas["Key"]["pattern"], key.as_str());
    let long = "k".repeat(shop::MAX_KEY_LEN);
    let too_long = "k".repeat(shop::MAX_KEY_LEN + 1);
    for (value, ok) in [
        ("c-1.a:b_c", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("a b", false),
        ("", false),
    ] {
        assert_eq!(ParamFormat::Id.accepts(value), ok, "{value}");
    }
    assert_eq!(schemas["Day"]["format"], "date");
    assert!(ParamFormat::Day.accepts("2024-02-29"));
    assert!(!ParamFormat::Day.accepts("2024-02-30"));
}
