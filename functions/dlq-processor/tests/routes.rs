//! The routes the function serves are the template's, and the contract lists them.

#[test]
fn the_routes_are_the_templates_and_the_contracts() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/");
    let template = eventfold_local::Template::load(
        std::path::Path::new(&format!("{root}template.yaml")),
        "test",
        "us-east-1",
    )
    .expect("template loads");
    let mut served: Vec<String> = dlq_processor::routes()
        .iter()
        .map(|r| (*r).to_owned())
        .collect();
    served.sort();
    assert_eq!(template.route_keys("dlq-processor"), served);

    let text = std::fs::read_to_string(format!("{root}openapi.yaml")).expect("contract readable");
    let contract: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("contract parses");
    for route in dlq_processor::routes() {
        let (method, path) = route.split_once(' ').expect("METHOD /path");
        let operation = &contract["paths"][path][method.to_lowercase().as_str()];
        assert!(
            operation.is_mapping(),
            "{route} is not in infra/openapi.yaml"
        );
        let security = &operation["security"][0]["bearerAuth"][0];
        assert_eq!(security.as_str(), Some("events:admin"), "{route}");
        assert!(
            operation["responses"]["403"].is_mapping(),
            "{route} documents its 403"
        );
    }
}
