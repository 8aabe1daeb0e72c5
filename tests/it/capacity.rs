//! The load run behind `docs/capacity.md` (`eventfold-bench e2e`), run small, and the
//! template's scaling settings as the local stack reads them and the doc states them.

use bench::e2e::{E2eOptions, esm_options, measure};
use eventfold_local::template::EventSourceSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_e2e_run_counts_consistent_requests() {
    let stack = tests::stack_with(esm_options()).await;
    let orders = 2;
    let report = measure(
        &stack,
        E2eOptions {
            orders,
            concurrency: 2,
        },
    )
    .await
    .expect("the run completes");
    let table = report.render();
    assert_eq!(report.confirmed, orders, "{table}");
    assert_eq!(report.denials, 0, "{table}");
    assert_eq!(report.api_commands, 4 * orders);
    assert_eq!(report.confirmed_ms.len() as u64, orders, "{table}");
    assert!(report.confirmed_ms.iter().all(|ms| *ms > 0.0), "{table}");
    // Each API command commits once to its own order's stream: one PutItem each.
    assert_eq!(
        report.count(
            Some("CommandApiFunction"),
            "EventsTable",
            "dynamodb:PutItem"
        ),
        report.api_commands,
        "{table}"
    );
    // Every commit is a PutItem on the events table (a lost race is one more), and the
    // saga's commands add commits beyond the API's.
    let puts = report.count(None, "EventsTable", "dynamodb:PutItem");
    assert!(
        puts >= report.commits,
        "{puts} puts < {} commits\n{table}",
        report.commits
    );
    assert!(report.commits > report.api_commands, "{table}");
    assert!(report.event_total() >= report.commits, "{table}");
    // Every commit was published and reached the projector.
    assert!(
        report.count(
            Some("StreamPublisherFunction"),
            "EventsTopic",
            "sns:PublishBatch"
        ) > 0,
        "{table}"
    );
    assert!(
        report.invocations.get("ProjectorFunction").copied() > Some(0),
        "{table}"
    );
    // Idle polls are not work: the work total is the work rows plus the polls that found
    // records, and those are at most every poll.
    let rows: u64 = report.work.iter().map(|r| r.count).sum();
    assert_eq!(report.work_total(), rows + report.productive_polls());
    assert!(report.productive_polls() <= report.poll_total());
    assert!(table.contains("total work requests"), "{table}");
    stack.stop().await;
}

#[test]
fn the_template_caps_each_queue_source_as_capacity_md_says() {
    let path = tests::root().join(eventfold_local::stack::TEMPLATE_PATH);
    let template = eventfold_local::Template::load(&path, "it", "us-east-1").expect("template");
    let doc = std::fs::read_to_string(tests::root().join("docs/capacity.md")).expect("doc");
    let mut queues = 0;
    for function in template.functions() {
        for source in &function.event_sources {
            match source {
                EventSourceSpec::Sqs(s) => {
                    queues += 1;
                    let n = s.maximum_concurrency.unwrap_or_else(|| {
                        panic!(
                            "{}.{} has no MaximumConcurrency",
                            function.logical_id, s.name
                        )
                    });
                    assert!((2..=1000).contains(&n), "AWS allows 2..=1000, not {n}");
                    let line = format!(
                        "`{}.{}`: MaximumConcurrency {n}",
                        function.logical_id, s.name
                    );
                    assert!(doc.contains(&line), "docs/capacity.md lacks {line:?}");
                }
                EventSourceSpec::DynamoDb(s) => {
                    assert_eq!(s.parallelization_factor, 1, "per-stream order needs 1");
                    let line = format!(
                        "`{}.{}`: ParallelizationFactor 1",
                        function.logical_id, s.name
                    );
                    assert!(doc.contains(&line), "docs/capacity.md lacks {line:?}");
                }
                EventSourceSpec::Schedule(_) => {}
            }
        }
    }
    assert_eq!(queues, 5, "projector, saga and the DLQ processor's three");
}
