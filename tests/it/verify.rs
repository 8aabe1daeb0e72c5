//! `eventfold verify` against the local stack with IAM enforced: the stack registers its
//! outputs as a CloudFormation stack on the emulator, verify finds everything through them
//! (as against AWS) and takes one order through every hop to confirmed; and with one
//! permission removed from the projector's role (`dynamodb:PutItem` on the read models), it
//! fails naming the projector hop and the denial.

use eventfold_local::esm::EsmOptions;
use eventfold_local::{JwtConfig, LocalOptions, LocalStack};
use std::path::Path;
use std::time::Duration;
use tests::{endpoint, root};

/// A stack named `it-…` whose files (template, scripts, `.venv`) are under `root`.
async fn stack(root: &Path) -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    cli::local::start_with(
        LocalOptions {
            root: root.to_path_buf(),
            api_addr: "127.0.0.1:0".parse().expect("valid address"),
            emulator_port: 0,
            endpoint: Some(endpoint()),
            stack: format!("{}-{}", tests::STACK, &id[id.len() - 10..]),
            auth: JwtConfig::dev(),
            parameter_overrides: Vec::new(),
            iam: true,
            iam_port: 0,
        },
        EsmOptions {
            idle_poll: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(20),
            sqs_visibility_timeout: Some(Duration::from_secs(2)),
            report_every: None,
            ..EsmOptions::default()
        },
    )
    .await
    .expect("local stack starts")
}

fn options(stack: &LocalStack) -> cli::verify::Options {
    cli::verify::Options {
        stack: stack.template.stack.clone(),
        token: tests::rw_token(cli::verify::TENANT),
        timeout: Duration::from_secs(40),
        poll: Duration::from_millis(100),
    }
}

/// Runs verify, returning its report and the lines it printed.
async fn verify(stack: &LocalStack) -> (cli::verify::Report, Vec<String>) {
    let mut printed = Vec::new();
    let report =
        cli::verify::run(&stack.sdk, &options(stack), |h| printed.push(h.to_string())).await;
    (report, printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_takes_an_order_through_every_hop_of_the_local_stack() {
    let stack = stack(&root()).await;
    // The registered outputs are what DescribeStacks gives, the API URL the local one.
    let outputs = cli::verify::observe::outputs(&stack.sdk, &stack.template.stack)
        .await
        .expect("the stack's outputs are registered");
    assert_eq!(outputs["ApiUrl"], format!("{}/", stack.api_url()));
    assert_eq!(outputs["EventsTableName"], tests::events_table(&stack));
    assert_eq!(
        outputs["SagaDeadLetterQueueUrl"],
        stack.queue_url("SagaDeadLetterQueue")
    );

    let (report, printed) = verify(&stack).await;
    assert_eq!(
        cli::verify::outcome(&report).err().map(|e| e.to_string()),
        None,
        "{printed:#?}"
    );
    use cli::verify::hop;
    let names: Vec<&str> = report.hops.iter().map(|h| h.name).collect();
    assert_eq!(
        names,
        [
            hop::OUTPUTS,
            hop::COMMANDS,
            hop::EVENTS_TABLE,
            hop::FAN_OUT,
            hop::PROJECTOR,
            hop::SAGA,
            hop::DEAD_LETTERS
        ]
    );
    // Each hop printed with its latency.
    assert_eq!(printed.len(), names.len());
    for (line, name) in printed.iter().zip(names) {
        assert!(
            line.starts_with("ok   ") && line.contains(name) && line.contains(" ms "),
            "{line}"
        );
    }
    assert!(printed[5].contains("Confirmed"), "{}", printed[5]);
    tests::assert_no_denials(&stack);
    stack.stop().await;
}

/// A copy of the repository root whose template's projector role lacks `dynamodb:PutItem` on
/// the read models (scripts and `.venv` linked from the real root).
fn root_without_projector_put(dir: &Path) -> std::path::PathBuf {
    let real = root();
    let template = std::fs::read_to_string(real.join(eventfold_local::stack::TEMPLATE_PATH))
        .expect("template");
    let role = template
        .find("  ProjectorFunctionRole:\n")
        .expect("the projector's role");
    let sid = role
        + template[role..]
            .find("Sid: ReadModelsWrite")
            .expect("its read-models statement");
    let put = sid
        + template[sid..]
            .find("- dynamodb:PutItem\n")
            .expect("PutItem in it");
    let line = template[..put].rfind('\n').expect("line start") + 1;
    let end = put + "- dynamodb:PutItem\n".len();
    let edited = format!("{}{}", &template[..line], &template[end..]);
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("infra")).expect("mkdir");
    std::fs::write(root.join(eventfold_local::stack::TEMPLATE_PATH), edited).expect("write");
    for link in ["scripts", ".venv"] {
        std::os::unix::fs::symlink(real.join(link), root.join(link)).expect("symlink");
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_projector_hop_when_its_role_lacks_a_permission() {
    let dir = std::env::temp_dir().join(format!(
        "eventfold-verify-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let stack = stack(&root_without_projector_put(&dir)).await;
    // The denials are the point: the run's IAM report must not count them.
    let iam = stack.iam.as_ref().expect("IAM on");
    iam.leave_out_of_record();

    let (report, printed) = verify(&stack).await;
    let failed = report.failed().expect("verify fails");
    assert_eq!(failed.name, cli::verify::hop::PROJECTOR, "{printed:#?}");
    assert!(
        failed.detail.contains("AccessDenied") && failed.detail.contains("dynamodb:PutItem"),
        "{}",
        failed.detail
    );
    let message = cli::verify::outcome(&report)
        .expect_err("a failed run is an error")
        .to_string();
    assert!(
        message.starts_with("verify failed at hop \"projector\": "),
        "{message}"
    );
    // The hops before it passed; none after it ran.
    assert_eq!(
        report.hops.last().map(|h| h.name),
        Some(cli::verify::hop::PROJECTOR)
    );
    assert!(
        report.hops[..report.hops.len() - 1].iter().all(|h| h.ok),
        "{printed:#?}"
    );
    assert!(
        iam.denials().iter().any(|d| d.action == "dynamodb:PutItem"),
        "{:?}",
        iam.denials()
    );
    stack.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
