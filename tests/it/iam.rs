//! IAM enforced on the local stack: a function's call outside its role fails with the error
//! AWS gives (DynamoDB, SQS, SNS), its allowed calls go through, the harness's own clients
//! are not checked, and the projector's batched read (`BatchGetItem`) is in its role.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use eventfold_aws::DynamoReadModelStore;
use eventfold_consumers::projection::{ModelKey, ReadModelStore};
use tests::{quiet_stack, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_the_role_fails_as_aws_fails_it() {
    let stack = quiet_stack().await;
    let iam = stack.iam.as_ref().expect("IAM is on by default");
    // Its denials are on purpose: the run's report must not count them.
    iam.leave_out_of_record();
    let models = table(&stack, "ReadModelsTable");
    // The query API reads the read models and nothing else.
    let sdk = stack.function_sdk("QueryApiFunction");
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let key = |k: &str| AttributeValue::S(k.to_owned());
    let read = dynamo
        .get_item()
        .table_name(&models)
        .key("pk", key("p"))
        .key("sk", key("s"))
        .send()
        .await;
    assert!(read.is_ok(), "GetItem is in its role: {read:?}");
    let err = dynamo
        .put_item()
        .table_name(&models)
        .item("pk", key("p"))
        .item("sk", key("s"))
        .send()
        .await
        .expect_err("PutItem is not in its role")
        .into_service_error();
    let arn = format!("arn:aws:dynamodb:us-east-1:123456789012:table/{models}");
    assert_eq!(err.code(), Some("AccessDeniedException"));
    assert_eq!(
        err.message(),
        Some(
            format!(
                "User: arn:aws:sts::123456789012:assumed-role/{0}-QueryApiFunctionRole/{0}-QueryApiFunction is not authorized to perform: dynamodb:PutItem on resource: {arn} because no identity-based policy allows the dynamodb:PutItem action",
                stack.template.stack
            )
            .as_str()
        )
    );

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let err = sqs
        .send_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .message_body("x")
        .message_group_id("g")
        .message_deduplication_id("d")
        .send()
        .await
        .expect_err("SendMessage is not in its role")
        .into_service_error();
    assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
    assert!(
        err.message().is_some_and(|m| m.contains("sqs:SendMessage")),
        "{err:?}"
    );

    let topic = stack
        .template
        .arn("EventsTopic")
        .expect("the template's topic");
    let err = aws_sdk_sns::Client::new(&sdk)
        .publish()
        .topic_arn(&topic)
        .message("x")
        .message_group_id("g")
        .message_deduplication_id("d")
        .send()
        .await
        .expect_err("Publish is not in its role")
        .into_service_error();
    assert_eq!(err.code(), Some("AuthorizationError"), "{err:?}");

    // Nothing reached the emulator, and the harness's own client is not checked.
    let admin = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let item = admin
        .get_item()
        .table_name(&models)
        .key("pk", key("p"))
        .key("sk", key("s"))
        .send()
        .await
        .expect("admin reads");
    assert!(item.item.is_none());
    let denied: Vec<String> = iam.denials().into_iter().map(|d| d.action).collect();
    assert_eq!(
        denied,
        ["dynamodb:PutItem", "sqs:SendMessage", "sns:Publish"]
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projectors_batched_read_is_in_its_role() {
    let stack = quiet_stack().await;
    let store = DynamoReadModelStore::from_sdk(
        &stack.function_sdk("ProjectorFunction"),
        table(&stack, "ReadModelsTable"),
    );
    let keys = [ModelKey::Doc {
        tenant: "t".into(),
        view: "orders".into(),
        key: "o-1".into(),
    }];
    let found = store.get_many(&keys).await;
    assert!(found.is_ok(), "BatchGetItem as the projector: {found:?}");
    let iam = stack.iam.as_ref().expect("IAM on");
    assert!(iam.denials().is_empty(), "{:?}", iam.denials());
    assert!(
        iam.calls()
            .keys()
            .any(|c| c.action == "dynamodb:BatchGetItem" && c.allowed),
        "{:?}",
        iam.calls()
    );
    stack.stop().await;
}

/// A function run alone (`eventfold local --print-env FUNCTION`, then `cargo lambda watch`)
/// gets the stack's IAM proxy as its endpoint and its own identity, so its role is enforced
/// there as in the stack: the query API may read the read models and may not write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_run_alone_calls_aws_as_itself_through_the_proxy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let options = eventfold_local::LocalOptions {
        root: tests::root(),
        api_addr: "127.0.0.1:0".parse().expect("valid address"),
        emulator_port: 0,
        endpoint: Some(tests::endpoint()),
        stack: format!("{}-{}", tests::STACK, &id[id.len() - 10..]),
        auth: eventfold_local::JwtConfig::dev(),
        parameter_overrides: Vec::new(),
        iam: true,
        iam_port: port,
    };
    let esm = eventfold_local::EsmOptions {
        enabled: false,
        ..Default::default()
    };
    let stack = cli::local::start_with(options.clone(), esm)
        .await
        .expect("local stack starts");
    stack.iam.as_ref().expect("IAM is on").leave_out_of_record();
    let text = cli::local::print_env(&options, "query-api").expect("a known function");
    let env: std::collections::BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env["AWS_ENDPOINT_URL"], format!("http://127.0.0.1:{port}"));
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"],
        eventfold_local::iam::access_key("QueryApiFunction")
    );
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .endpoint_url(env["AWS_ENDPOINT_URL"])
        .region(aws_sdk_dynamodb::config::Region::new(
            env["AWS_REGION"].to_owned(),
        ))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            None,
            None,
            "print-env",
        ))
        .build();
    let dynamo = aws_sdk_dynamodb::Client::from_conf(config);
    let models = env["READ_MODELS_TABLE"];
    let key = |k: &str| AttributeValue::S(k.to_owned());
    let read = dynamo
        .get_item()
        .table_name(models)
        .key("pk", key("p"))
        .key("sk", key("s"))
        .send()
        .await;
    assert!(read.is_ok(), "GetItem is in the query API's role: {read:?}");
    let err = dynamo
        .put_item()
        .table_name(models)
        .item("pk", key("p"))
        .item("sk", key("s"))
        .send()
        .await
        .expect_err("PutItem is not in its role")
        .into_service_error();
    assert_eq!(err.code(), Some("AccessDeniedException"), "{err:?}");
    stack.stop().await;
}
