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
fn print_env_gives_each_function_what_it_reads() {
    let options = eventfold_local::LocalOptions {
        root: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        api_addr: "127.0.0.1:0".parse().expect("address"),
        emulator_port: 4599,
        endpoint: None,
        stack: "eventfold-local".into(),
        auth: eventfold_local::JwtConfig::dev(),
        parameter_overrides: vec![("PaymentTimeoutSeconds".into(), "5".into())],
        iam: true,
        iam_port: 4598,
    };
    let env = |f: &str| cli::local::print_env(&options, f).expect("known function");
    let publisher = env("stream-publisher");
    let topic = publisher
        .lines()
        .find_map(|l| l.strip_prefix("EVENTS_TOPIC_ARN="))
        .expect("the publisher needs its topic");
    assert!(
        topic.starts_with("arn:aws:sns:") && topic.ends_with(":eventfold-local-events.fifo"),
        "{topic}"
    );
    // One function calls through the IAM proxy, as itself.
    assert!(publisher.contains("AWS_ENDPOINT_URL=http://127.0.0.1:4598\n"));
    assert!(publisher.contains("AWS_ACCESS_KEY_ID=LOCALStreamPublisherFunction\n"));
    assert!(!publisher.contains("READ_MODELS_TABLE="));
    let projector = env("projector");
    assert!(projector.contains("READ_MODELS_TABLE=eventfold-local-ReadModelsTable\n"));
    assert!(projector.contains("EVENTS_TABLE=eventfold-local-EventsTable\n"));
    assert!(
        env("saga").contains("SAGA_TIMEOUT_SECONDS=5\n"),
        "overrides apply"
    );
    let all = env(cli::local::ALL_FUNCTIONS);
    for line in publisher
        .lines()
        .chain(projector.lines())
        .chain(env("command-api").lines())
        .filter(|l| !l.starts_with("AWS_"))
    {
        assert!(all.lines().any(|l| l == line), "{line} missing from all");
    }
    // Seven identities do not fit one environment: all of them call the emulator.
    assert!(all.contains("AWS_ENDPOINT_URL=http://127.0.0.1:4599\n"));
    let unchecked = eventfold_local::LocalOptions {
        iam: false,
        ..options.clone()
    };
    assert!(
        cli::local::print_env(&unchecked, "stream-publisher")
            .expect("known")
            .contains("AWS_ENDPOINT_URL=http://127.0.0.1:4599\n")
    );
    assert!(cli::local::print_env(&options, "nope").is_err());
}
