//! The shop's wiring into the local runtime: every function of the project's template has a
//! local handler of the kind its events need, and the gateway's own problems share the
//! functions' problem `type` base.

use eventfold_local::Template;
use std::path::Path;

#[test]
fn every_template_function_has_a_local_handler() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let template = Template::load(&path, "st", "us-east-1").expect("loads");
    let functions = cli::local::shop_functions();
    let wanted = template.functions();
    assert!(!wanted.is_empty());
    for f in &wanted {
        if !f.routes.is_empty() {
            assert!(
                functions.serves_http(&f.binary),
                "{} serves routes but {} has no HTTP handler in cli::local",
                f.logical_id,
                f.binary
            );
        }
        if !f.event_sources.is_empty() {
            assert!(
                functions.consumes_events(&f.binary),
                "{} has event sources but {} has no event handler in cli::local",
                f.logical_id,
                f.binary
            );
        }
        assert!(
            functions.binaries().any(|b| b == f.binary),
            "{} runs {}, which cli::local does not wire",
            f.logical_id,
            f.binary
        );
    }
}

#[test]
fn gateway_problems_use_the_functions_problem_base() {
    assert_eq!(
        eventfold_local::gateway::DEFAULT_PROBLEM_BASE,
        eventfold_aws::http::PROBLEM_BASE
    );
}
