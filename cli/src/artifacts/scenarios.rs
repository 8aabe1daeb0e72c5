//! What each function is sent and what it must answer: its sample events
//! (`functions/<binary>/events/*.json`) in an order that lets one stack serve all seven (the
//! command API's samples write the order the stream publisher, the projector, the query API
//! and the saga's samples describe), with the answers the x86 runtime tests
//! (`functions/*/tests/runtime.rs`) expect of the same samples.

use anyhow::{Context, Result, anyhow, bail, ensure};
use eventfold_local::LocalStack;
use serde_json::{Value, json};
use std::path::Path;

/// The answer a sample must get.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// An HTTP API response with this status, and these JSON-pointer fields in its body
    /// (each value as JSON text).
    Http(u64, &'static [(&'static str, &'static str)]),
    /// An SQS or stream batch answer with no item failure.
    NoBatchFailures,
    /// Exactly this JSON document (as JSON text).
    Json(&'static str),
}

/// One invocation: the sample's file name (without `.json`) and the answer it must get.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The sample's file name in the function's `events/`, without `.json`.
    pub sample: &'static str,
    /// The answer it must get.
    pub expect: Expect,
}

const fn http(
    sample: &'static str,
    status: u64,
    fields: &'static [(&'static str, &'static str)],
) -> Step {
    Step {
        sample,
        expect: Expect::Http(status, fields),
    }
}

const fn batch(sample: &'static str) -> Step {
    Step {
        sample,
        expect: Expect::NoBatchFailures,
    }
}

/// The functions (by binary) in the order they run against one stack, each with its steps.
pub const SCENARIOS: &[(&str, &[Step])] = &[
    (
        "command-api",
        &[
            http(
                "create-order",
                201,
                &[("/stream_id", "\"acme/Order-o-1001\""), ("/version", "1")],
            ),
            http("add-item", 200, &[("/version", "2")]),
            http(
                "place-order",
                200,
                &[("/version", "3"), ("/events/0/type", "\"OrderPlaced\"")],
            ),
            http("get-order", 200, &[("/version", "3")]),
            http("get-order-at-version", 200, &[("/version", "1")]),
            http("order-events", 200, &[("/events/1/version", "2")]),
        ],
    ),
    ("stream-publisher", &[batch("insert")]),
    ("projector", &[batch("sqs")]),
    (
        "query-api",
        &[
            http(
                "order-summary",
                200,
                &[
                    ("/view", "\"order-summary\""),
                    ("/item/order_id", "\"o-1001\""),
                    ("/item/customer_id", "\"c-17\""),
                ],
            ),
            http("stock-levels", 200, &[("/items", "[]")]),
        ],
    ),
    (
        "saga",
        &[
            batch("sqs"),
            Step {
                sample: "schedule",
                expect: Expect::Json(r#"{"due":0,"timed_out":0,"stale":0,"commands_sent":0}"#),
            },
        ],
    ),
    (
        "streams-api",
        &[
            http("create-topic", 201, &[("/name", "\"payments\"")]),
            http("list-topics", 200, &[]),
            http("publish-single", 201, &[("/offset", "1")]),
            http("publish-batch", 201, &[("/records/2/offset", "4")]),
            http(
                "consume",
                200,
                &[("/records/0/event_type", "\"PaymentAuthorized\"")],
            ),
            http("commit", 200, &[]),
            http("lag", 200, &[("/total", "1")]),
            http(
                "history",
                200,
                &[("/records/0/event_type", "\"PaymentAuthorized\"")],
            ),
        ],
    ),
    (
        "dlq-processor",
        &[
            batch("sqs"),
            http("http", 200, &[("/items/0/status", "\"open\"")]),
        ],
    ),
];

/// The sample `step` of the function `binary`, as this stack delivers it: read from
/// `functions/<binary>/events/`, and the dead-letter samples' queue ARNs (the
/// `eventfold-dev` stack's) made this stack's.
pub fn event(root: &Path, stack: &LocalStack, binary: &str, step: &Step) -> Result<Value> {
    let dir = root.join("functions").join(binary);
    let mut event = eventfold_local::runtime_api::sample_event(&dir, step.sample)?;
    if binary == "dlq-processor" && step.sample == "sqs" {
        for record in event["Records"].as_array_mut().into_iter().flatten() {
            let arn = record["eventSourceARN"].as_str().unwrap_or_default();
            let queue = arn.rsplit(':').next().unwrap_or_default();
            let suffix = queue
                .strip_prefix("eventfold-dev-")
                .ok_or_else(|| anyhow!("{binary}/{}: unexpected source {arn}", step.sample))?;
            let ours = stack
                .template
                .queues()
                .into_iter()
                .find(|q| q.name == format!("{}-{suffix}", stack.template.stack))
                .and_then(|q| stack.template.arn(&q.logical_id))
                .ok_or_else(|| anyhow!("the stack has no queue for {arn}"))?;
            record["eventSourceARN"] = json!(ours);
        }
    }
    Ok(event)
}

/// Checks `answer` (the function's response document) against `expect`.
pub fn check(expect: &Expect, answer: &Value) -> Result<()> {
    match expect {
        Expect::NoBatchFailures => ensure!(
            *answer == json!({"batchItemFailures": []}),
            "expected no batch item failures, got {answer}"
        ),
        Expect::Json(text) => {
            let wanted: Value = serde_json::from_str(text)?;
            ensure!(*answer == wanted, "expected {wanted}, got {answer}");
        }
        Expect::Http(status, fields) => {
            let got = answer["statusCode"]
                .as_u64()
                .ok_or_else(|| anyhow!("no statusCode in {answer}"))?;
            let text = answer["body"]
                .as_str()
                .ok_or_else(|| anyhow!("no text body in {answer}"))?;
            let body: Value =
                serde_json::from_str(text).with_context(|| format!("a JSON body: {text}"))?;
            ensure!(
                got == *status,
                "expected status {status}, got {got}: {body}"
            );
            for (pointer, value) in *fields {
                let wanted: Value = serde_json::from_str(value)?;
                match body.pointer(pointer) {
                    Some(v) if *v == wanted => {}
                    other => bail!("expected {pointer} = {wanted}, got {other:?} in {body}"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_by_status_fields_and_documents() {
        let ok = json!({"statusCode": 201, "body": "{\"name\":\"payments\",\"n\":[1,2]}"});
        check(&Expect::Http(201, &[("/name", "\"payments\"")]), &ok).expect("matches");
        check(&Expect::Http(201, &[("/n/1", "2")]), &ok).expect("matches");
        let status = check(&Expect::Http(200, &[]), &ok).expect_err("status");
        assert!(status.to_string().contains("status 200"), "{status}");
        let field = check(&Expect::Http(201, &[("/name", "\"x\"")]), &ok).expect_err("field");
        assert!(field.to_string().contains("/name"), "{field}");
        check(&Expect::NoBatchFailures, &json!({"batchItemFailures": []})).expect("none");
        let failed = json!({"batchItemFailures": [{"itemIdentifier": "m"}]});
        check(&Expect::NoBatchFailures, &failed).expect_err("a failure");
        check(&Expect::Json("{\"a\":1}"), &json!({"a": 1})).expect("same");
        check(&Expect::Json("{\"a\":1}"), &json!({"a": 2})).expect_err("differs");
    }

    #[test]
    fn every_step_names_a_sample_that_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (binary, steps) in SCENARIOS {
            for step in *steps {
                let path = root
                    .join("functions")
                    .join(binary)
                    .join("events")
                    .join(format!("{}.json", step.sample));
                assert!(path.is_file(), "{}", path.display());
            }
        }
    }
}
