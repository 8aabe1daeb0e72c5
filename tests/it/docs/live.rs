//! The blocks run against a live local stack, all on one: `docs/local.md`'s rebuild and
//! zero-downtime rebuild, `docs/operations.md`'s dead letters, and the rebuild line of its deployed-stack block
//! (`--aws`: the SDK's own configuration, pointed at the emulator through its environment).
//!
//! Each command runs through `sh` as the docs write it, with this checkout's `eventfold`, the
//! test stack's endpoint (`AWS_ENDPOINT_URL`) and name (`--stack`, the one flag added), and a
//! real letter's id for `ID`.

use super::{Block, Ran, block, code_and_comment, eventfold, sh, with_binary, words};
use eventfold::StreamId;
use eventfold_aws::{DynamoDeadLetterStore, DynamoReadModelStore};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::{DeadLetter, DeadLetterStore, Filter, Status};
use eventfold_consumers::projection::ReadModelStore;
use eventfold_local::LocalStack;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// The orders the rebuild replays: id and quantity of its one line.
const ORDERS: [(&str, i64); 3] = [("o-1", 1), ("o-2", 2), ("o-3", 3)];
/// The price of every line, in minor units.
const PRICE: i64 = 1250;
/// The view the docs rebuild.
const VIEW: &str = shop::views::ORDER_SUMMARY;

/// Waits up to `limit` for `check`, polling; fails naming `what`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends the projector a notification it refuses on every receive (it announces version 1
/// of `stream` and carries version 7): after five receives it is a dead letter.
async fn send_poison(stack: &LocalStack, stream: &StreamId) {
    let mut n = Notification::of(&crate::dlq::received(stream, 1, 5)).expect("a notification");
    if let Some(e) = n.event.as_mut() {
        e.version = 7;
    }
    aws_sdk_sqs::Client::new(&stack.sdk)
        .send_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .message_body(serde_json::to_string(&n).expect("json"))
        .message_group_id(stream.to_string())
        .message_deduplication_id(format!("poison-{}", stream.id()))
        .send()
        .await
        .expect("send");
}

/// Creates each of [`ORDERS`] with its one line, through the HTTP API.
async fn place_orders(stack: &LocalStack, tenant: &str) {
    let http = Http::new(&stack.api_url());
    let token = tests::rw_token(tenant);
    for (id, quantity) in ORDERS {
        for (kind, data) in [
            ("CreateOrder", json!({"customer_id": "c-1"})),
            (
                "AddItem",
                json!({"sku": "book", "quantity": quantity, "unit_price": PRICE}),
            ),
        ] {
            let body =
                json!({"aggregate_type": "Order", "aggregate_id": id, "type": kind, "data": data});
            let r = http
                .post("/api/v1/events/commands", Some(&token), &body)
                .await
                .expect("post");
            assert!(
                matches!(r.status, 200 | 201),
                "{body}: {} {}",
                r.status,
                r.json
            );
        }
    }
}

/// The one command of `block` that runs `eventfold` with `args` (its first words).
fn line_of<'a>(block: &'a Block, args: &[&str]) -> &'a str {
    let found: Vec<&str> = block
        .commands()
        .into_iter()
        .filter(|l| words(l).iter().skip(1).take(args.len()).eq(args.iter()))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{}: one `{}` line",
        block.at,
        args.join(" ")
    );
    found[0]
}

/// Runs `eventfold` `line` of the docs against `stack`: the binary replaced by `binary`,
/// `--stack` added, `AWS_ENDPOINT_URL` the stack's emulator.
fn run(
    binary: &Path,
    stack: &str,
    endpoint: &str,
    line: &str,
) -> impl Future<Output = Ran> + use<> {
    let command = format!("{} --stack {stack}", with_binary(line, binary));
    let endpoint = endpoint.to_owned();
    async move { sh(&command, &[("AWS_ENDPOINT_URL", endpoint)]).await }
}

/// The forms of a usage line of the dlq block: every `[...]` in, and (when it has any) none;
/// a `# or ARGS` comment adds the same command with ARGS instead of its arguments.
fn forms(line: &str) -> Vec<String> {
    let (code, comment) = code_and_comment(line);
    let mut usages = vec![code.to_owned()];
    if let Some(args) = comment.and_then(|c| c.strip_prefix("or ")) {
        let command: Vec<String> = words(code).into_iter().take(3).collect();
        usages.push(format!("{} {args}", command.join(" ")));
    }
    let mut forms = Vec::new();
    for usage in usages {
        forms.push(usage.replace(['[', ']'], ""));
        if usage.contains('[') {
            let mut bare = String::new();
            let mut depth = 0;
            for c in usage.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    c if depth == 0 => bare.push(c),
                    _ => {}
                }
            }
            forms.push(bare.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    forms
}

/// `form` with its placeholders filled: `ID` the letter's id, `C` a consumer.
fn fill(form: &str, id: &str) -> String {
    let words: Vec<&str> = form
        .split(' ')
        .map(|w| match w {
            "ID" => id,
            "C" => "projector",
            w => w,
        })
        .collect();
    words.join(" ")
}

#[test]
fn usage_lines_expand_to_their_forms() {
    assert_eq!(
        forms("eventfold dlq list [--consumer projector] [--status open]"),
        [
            "eventfold dlq list --consumer projector --status open",
            "eventfold dlq list"
        ]
    );
    assert_eq!(
        forms("eventfold dlq redrive ID            # or --all [--consumer C]"),
        [
            "eventfold dlq redrive ID",
            "eventfold dlq redrive --all --consumer C",
            "eventfold dlq redrive --all"
        ]
    );
    assert_eq!(
        fill(
            r#"eventfold dlq discard ID --reason "fixed by hand""#,
            "x-1"
        ),
        r#"eventfold dlq discard x-1 --reason "fixed by hand""#
    );
}

/// The stack's dead letter `id`.
async fn letter(letters: &DynamoDeadLetterStore, id: &str) -> DeadLetter {
    letters
        .get(None, id)
        .await
        .expect("get")
        .expect("the letter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_dlq_and_aws_rebuild_blocks_run_as_written_on_one_stack() {
    let started = Instant::now();
    let binary = eventfold().await;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{}-{}", tests::STACK, &id[id.len() - 10..]);
    let stack = tests::stack_named(&name, crate::dlq::fast()).await;
    let endpoint = stack.endpoint.clone();
    let tenant = tests::unique_tenant("docs");
    let poisoned = ["a", "b"].map(|s| StreamId::new(&tenant, "Inventory", s).expect("valid"));
    for stream in &poisoned {
        send_poison(&stack, stream).await;
    }
    place_orders(&stack, &tenant).await;

    let models =
        DynamoReadModelStore::from_sdk(&stack.sdk, tests::table(&stack, "ReadModelsTable"));
    wait_for(
        Duration::from_secs(90),
        "every order in the live view",
        || {
            let (models, tenant) = (&models, &tenant);
            async move {
                for (id, quantity) in ORDERS {
                    let doc = models.get(tenant, VIEW, id).await.expect("read model");
                    if doc.map(|d| d.data["total"].clone()) != Some(json!(quantity * PRICE)) {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;

    // docs/local.md: rebuild and compare; then with the live view changed behind its back.
    let rebuild = block("rebuild");
    let [line] = rebuild.commands()[..] else {
        panic!("{}: one command", rebuild.at)
    };
    assert!(
        words(line).contains(&VIEW.to_owned()),
        "this test makes orders for {VIEW}: {line}"
    );
    let out = run(&binary, &name, &endpoint, line).await;
    let said = out.ok();
    let n = ORDERS.len();
    assert!(
        said.contains(&format!(
            "rebuilt {VIEW}@rebuild: {n} streams (0 already done)"
        )) && said.contains(&format!("verify: {VIEW} equals its rebuild")),
        "{out:#?}"
    );
    let live = models
        .get(&tenant, VIEW, "o-1")
        .await
        .expect("get")
        .expect("o-1");
    let mut changed = live.clone();
    changed.data["total"] = json!(1);
    models
        .put(&tenant, VIEW, changed, live.checkpoint)
        .await
        .expect("put");
    let out = run(&binary, &name, &endpoint, line).await;
    assert!(
        out.code == Some(1)
            && out
                .stdout
                .contains(&format!("{n} streams ({n} already done)"))
            && out.stdout.contains(&format!(
                "verify: 1 difference(s) between {VIEW} and {VIEW}@rebuild:"
            ))
            && out.stdout.contains(&format!("{tenant}/o-1: live")),
        "a difference is printed, exit 1: {out:#?}"
    );
    let checkpoint = live.checkpoint;
    models
        .put(&tenant, VIEW, live, checkpoint)
        .await
        .expect("put back");

    // docs/operations.md, a deployed stack: the tables the stack's outputs name, the SDK's own
    // configuration (here the emulator's endpoint, region and dummy credentials).
    let deployed = block("deployed-stack");
    let mut env = vec![
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ];
    let exports = super::offline::exported_outputs(&deployed);
    for (var, output) in &exports {
        let table = super::offline::output_ref(output)
            .unwrap_or_else(|| panic!("{}: output {output} is a !Ref", deployed.at));
        env.push((var.as_str(), stack.resource_name(&table)));
    }
    let line = line_of(&deployed, &["projections", "rebuild"]);
    let out = sh(&with_binary(line, &binary), &env).await;
    let said = out.ok();
    assert!(
        said.contains(&format!("{n} streams ({n} already done)"))
            && said.contains(&format!("verify: {VIEW} equals its rebuild")),
        "{out:#?}"
    );

    // docs/local.md: the zero-downtime rebuild; v2 answers the queries, v1 is gone.
    let promote = block("rebuild-promote");
    let [line] = promote.commands()[..] else {
        panic!("{}: one command", promote.at)
    };
    let out = run(&binary, &name, &endpoint, line).await;
    let said = out.ok();
    assert!(
        said.contains(&format!("rebuilt {VIEW} v2: {n} streams"))
            && said.contains("verify: v2 equals v1")
            && said.contains(&format!("promoted {VIEW} v2"))
            && said.contains(&format!("retired {VIEW} v1: {n} items deleted")),
        "{out:#?}"
    );
    let pointer = models.pointer(VIEW).await.expect("pointer");
    assert_eq!((pointer.live, pointer.active()), (2, vec![2]));
    let answer = Http::new(&stack.api_url())
        .get(
            &format!("/api/v1/events/queries/{VIEW}?order_id=o-2"),
            Some(&tests::rw_token(&tenant)),
        )
        .await
        .expect("get");
    assert_eq!(
        (answer.status, answer.header(query_api::VERSION_HEADER)),
        (200, Some("2"))
    );
    assert_eq!(answer.json["item"]["total"], json!(2 * PRICE));

    // docs/operations.md, dead letters: the two poison messages.
    let letters =
        DynamoDeadLetterStore::from_sdk(&stack.sdk, tests::table(&stack, "DeadLettersTable"));
    let open = Filter {
        status: Some(Status::Open),
        ..Filter::default()
    };
    wait_for(Duration::from_secs(90), "two dead letters", || {
        let (letters, tenant, open) = (&letters, &tenant, &open);
        async move {
            letters
                .list(Some(tenant), open, 10)
                .await
                .expect("list")
                .len()
                == 2
        }
    })
    .await;
    let found = letters.list(Some(&tenant), &open, 10).await.expect("list");
    let of = |s: &StreamId| {
        found
            .iter()
            .find(|l| l.stream_id.as_deref() == Some(s.to_string().as_str()))
            .map(|l| l.id.clone())
            .expect("a letter of each poisoned stream")
    };
    let (a, b) = (of(&poisoned[0]), of(&poisoned[1]));
    let dlq = block("dlq");
    for line in dlq.commands() {
        let sub = words(line).get(2).cloned().unwrap_or_default();
        assert!(
            ["list", "show", "redrive", "discard"].contains(&sub.as_str()),
            "{}: this test does not run `{line}`",
            dlq.at
        );
    }
    let dlq_run = |form: &str, id: &str| run(&binary, &name, &endpoint, &fill(form, id));

    let list = forms(line_of(&dlq, &["dlq", "list"]));
    for form in &list {
        let out = dlq_run(form, "").await;
        let said = out.ok().trim_end();
        for id in [&a, &b] {
            assert!(said.contains(&format!("{id} [open] projector")), "{out:#?}");
        }
        assert!(said.ends_with("\n2 dead letter(s)"), "{out:#?}");
    }
    let show = line_of(&dlq, &["dlq", "show"]);
    let out = dlq_run(show, &a).await;
    let shown: Value = serde_json::from_str(out.ok()).expect("show prints the letter as JSON");
    assert_eq!(
        (&shown["id"], &shown["status"]),
        (&json!(a), &json!("open"))
    );
    assert!(
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not match")),
        "the projector's own error: {shown}"
    );

    let redrive = forms(line_of(&dlq, &["dlq", "redrive"]));
    let out = dlq_run(&redrive[0], &b).await;
    assert!(
        out.ok().trim_end().ends_with(&format!("; redriven: {b}")),
        "{out:#?}"
    );
    assert_eq!(letter(&letters, &b).await.status, Status::Redriven);

    let discard = line_of(&dlq, &["dlq", "discard"]);
    let out = dlq_run(discard, &a).await;
    let reason = code_and_comment(discard)
        .0
        .rsplit_once("--reason ")
        .map(|r| r.1);
    let reason = reason.expect("a --reason").trim_matches('"');
    assert_eq!(out.ok().trim_end(), format!("discarded {a} ({reason})"));
    let discarded = letter(&letters, &a).await;
    assert_eq!(discarded.status, Status::Discarded);
    assert_eq!(discarded.reason.as_deref(), Some(reason));
    assert!(
        discarded
            .changed_by
            .as_deref()
            .is_some_and(|c| c.starts_with("cli:")),
        "{discarded:?}"
    );
    let out = dlq_run(show, &a).await;
    let shown: Value = serde_json::from_str(out.ok()).expect("json");
    assert_eq!(shown["status"], "discarded");

    // A letter that is not open is refused (docs/operations.md: 409 `conflict` in the API).
    let out = dlq_run(&redrive[0], &a).await;
    assert!(
        out.code != Some(0) && out.stderr.contains(&format!("{a} is discarded, not open")),
        "{out:#?}"
    );
    // `--all [--consumer C]`: what is open now (the redriven poison may be a letter again).
    for form in &redrive[1..] {
        let out = dlq_run(form, "").await;
        let said = out.ok().trim_end();
        let last = said.lines().last().unwrap_or_default();
        assert!(
            last.ends_with(" letter(s) redriven, 0 failed") && !said.contains(&a),
            "{out:#?}"
        );
    }
    stack.stop().await;
    println!(
        "docs: rebuild, dlq and --aws blocks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
