//! `infra/openapi.yaml` against the registry: the aggregate types, every command of every
//! aggregate clients command as one variant of the discriminated `Command` with exactly the
//! command's fields, and the limits this crate enforces. Adding an aggregate, a command or a
//! field without updating the contract fails here.

use command_api::{DEFAULT_PAGE, MAX_PAGE};
use serde_json::{Map, Value, json};
use shop::CommandParseError;
use shop::registry::{self, AggregateVisitor, RegisteredAggregate};
use std::collections::BTreeSet;

fn contract() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("contract readable");
    serde_yaml_ng::from_str(&text).expect("contract parses")
}

/// `schema` with a local `$ref` followed.
fn deref<'a>(contract: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            deref(
                contract,
                contract.pointer(pointer).expect("reference resolves"),
            )
        }
        None => schema,
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Parses a command of the aggregate the registry finds, as `POST /commands` does.
struct Parse<'a> {
    command_type: &'a str,
    data: Value,
}

impl AggregateVisitor for Parse<'_> {
    type Output = Result<(), CommandParseError>;
    fn visit<A: RegisteredAggregate>(self) -> Self::Output {
        command_api::parse_client_command::<A>(self.command_type, self.data).map(|_| ())
    }
}

fn parse(category: &str, command_type: &str, data: Value) -> Result<(), CommandParseError> {
    registry::visit(category, Parse { command_type, data }).expect("a registered aggregate")
}

/// The fields of a command as serde knows them: the list its "unknown field" error gives
/// (`expected one of `a`, `b``, `expected `a``, or `there are no fields`).
fn command_fields(category: &str, command_type: &str) -> BTreeSet<String> {
    let err = parse(category, command_type, json!({"zz-not-a-field": 0}))
        .expect_err("an unknown field is refused");
    let text = err.to_string();
    assert!(text.contains("unknown field"), "{text}");
    let listed = text
        .split_once("unknown field `zz-not-a-field`")
        .map_or("", |(_, rest)| rest);
    listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// A value the field's schema allows.
fn sample(contract: &Value, schema: &Value) -> Value {
    let schema = deref(contract, schema);
    match schema["type"].as_str() {
        Some("integer") => schema["minimum"].clone(),
        Some("string") if schema["format"] == "date-time" => json!("2026-01-01T00:00:00Z"),
        Some("string") => {
            let pattern = schema["pattern"].as_str().unwrap_or_default();
            if pattern.starts_with("^[A-Za-z0-9_.:-]") {
                json!("k-1")
            } else {
                json!("why")
            }
        }
        other => panic!("no sample for a {other:?}"),
    }
}

#[test]
fn the_contract_lists_the_registered_aggregate_types() {
    let c = contract();
    let schemas = &c["components"]["schemas"];
    assert_eq!(
        strings(&schemas["AggregateType"]["enum"]),
        registry::CATEGORIES
    );
    assert_eq!(
        strings(&schemas["CommandAggregateType"]["enum"]),
        registry::EXTERNAL_CATEGORIES
    );
}

#[test]
fn every_command_is_one_variant_of_the_discriminated_command() {
    let c = contract();
    let command = &c["components"]["schemas"]["Command"];
    assert_eq!(command["discriminator"]["propertyName"], "type");
    let mapping = command["discriminator"]["mapping"]
        .as_object()
        .expect("a mapping");
    let mut listed = Vec::new();
    for variant in command["oneOf"].as_array().expect("a oneOf") {
        let reference = variant["$ref"].as_str().expect("a named variant");
        let schema = deref(&c, variant);
        let category = schema["properties"]["aggregate_type"]["const"]
            .as_str()
            .expect("aggregate_type const");
        let command_type = schema["properties"]["type"]["const"]
            .as_str()
            .expect("type const");
        assert_eq!(
            mapping.get(command_type).and_then(Value::as_str),
            Some(reference),
            "the discriminator maps {command_type} to its variant"
        );
        assert_eq!(schema["additionalProperties"], false, "{command_type}");
        listed.push((category.to_owned(), command_type.to_owned()));
    }
    assert_eq!(mapping.len(), listed.len());
    struct Types;
    impl AggregateVisitor for Types {
        type Output = Vec<&'static str>;
        fn visit<A: RegisteredAggregate>(self) -> Self::Output {
            // The commands only the system sends are not the clients' to submit.
            let internal = A::INTERNAL_COMMANDS;
            A::COMMAND_TYPES
                .iter()
                .copied()
                .filter(|t| !internal.contains(t))
                .collect()
        }
    }
    let registered: Vec<(String, String)> = registry::EXTERNAL_CATEGORIES
        .iter()
        .flat_map(|cat| {
            registry::visit(cat, Types)
                .expect("registered")
                .into_iter()
                .map(|t| ((*cat).to_owned(), t.to_owned()))
        })
        .collect();
    assert_eq!(listed, registered);
}

#[test]
fn each_variants_data_has_exactly_the_commands_fields() {
    let c = contract();
    for variant in c["components"]["schemas"]["Command"]["oneOf"]
        .as_array()
        .expect("a oneOf")
    {
        let schema = deref(&c, variant);
        let category = schema["properties"]["aggregate_type"]["const"]
            .as_str()
            .expect("aggregate_type");
        let command_type = schema["properties"]["type"]["const"]
            .as_str()
            .expect("type");
        let data = deref(&c, &schema["properties"]["data"]);
        let properties = data["properties"].as_object().cloned().unwrap_or_default();
        let documented: BTreeSet<String> = properties.keys().cloned().collect();
        assert_eq!(
            documented,
            command_fields(category, command_type),
            "{command_type}: the contract's data fields"
        );
        assert_eq!(data["additionalProperties"], false, "{command_type}");
        let required: BTreeSet<&str> = strings(&data["required"]).into_iter().collect();
        let full: Map<String, Value> = properties
            .iter()
            .map(|(name, field)| (name.clone(), sample(&c, field)))
            .collect();
        parse(category, command_type, Value::Object(full.clone()))
            .unwrap_or_else(|e| panic!("{command_type}: the contract's sample is refused: {e}"));
        for name in properties.keys() {
            let mut without = full.clone();
            without.remove(name);
            assert_eq!(
                parse(category, command_type, Value::Object(without)).is_err(),
                required.contains(name.as_str()),
                "{command_type}.{name}: required in the contract iff the command needs it"
            );
        }
        // `data` itself may be left out exactly when nothing in it is required.
        let top_required = strings(&schema["required"]).contains(&"data");
        assert_eq!(
            top_required,
            !required.is_empty(),
            "{command_type}: data required"
        );
        assert_eq!(
            parse(category, command_type, Value::Null).is_err(),
            top_required,
            "{command_type}: null data"
        );
    }
}

#[test]
fn the_contracts_limits_are_the_apis() {
    let c = contract();
    let schemas = &c["components"]["schemas"];
    let key = format!("^[A-Za-z0-9_.:-]{{1,{}}}$", shop::MAX_KEY_LEN);
    assert_eq!(schemas["Key"]["pattern"], key.as_str());
    assert_eq!(schemas["Key"]["maxLength"], shop::MAX_KEY_LEN);
    assert_eq!(schemas["AggregateId"]["pattern"], key.as_str());
    assert_eq!(schemas["Text"]["maxLength"], shop::MAX_TEXT_LEN);
    let events = &c["paths"]["/api/v1/events/aggregates/{aggregate_type}/{aggregate_id}/events"]["get"]
        ["parameters"];
    let limit = events
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("a limit");
    assert_eq!(limit["schema"]["maximum"], MAX_PAGE);
    assert_eq!(limit["schema"]["default"], DEFAULT_PAGE);
}
