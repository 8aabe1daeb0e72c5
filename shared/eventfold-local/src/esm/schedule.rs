//! Schedule event sources: the EventBridge rule a `Schedule` event declares, as a timer that
//! invokes the function asynchronously at the rule's `rate(...)` with the event Lambda
//! receives from EventBridge (`detail-type: Scheduled Event`, `source: aws.events`, the rule's
//! ARN, the tick's `time` to the second), or with the rule's `Input` when it has one. The first
//! invocation comes one period after the start, as a new rule's does. A failed invocation is
//! retried twice, as Lambda retries asynchronous invocations; then the tick is given up on
//! (the next one comes anyway). Ticks do not overlap: a slow function delays the next one.

use super::{Counters, Target};
use crate::template::LOCAL_ACCOUNT;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::Duration;

/// Retries of a failed asynchronous invocation (Lambda's default).
pub const ASYNC_RETRIES: u32 = 2;

/// One schedule of a function. A tick counts as a record in, then as ok or failed once its
/// retries are done.
pub struct ScheduleSource {
    /// The rule's ARN (`resources` of the event).
    pub rule_arn: String,
    /// Region (`region` of the event).
    pub region: String,
    /// Time between invocations.
    pub period: Duration,
    /// The rule's `Input`, sent instead of the scheduled event.
    pub input: Option<Value>,
    /// The function, its counters and pauses.
    pub target: Target,
}

/// The ARN of the rule a local stack `stack` gives the schedule `event` of `function`.
pub fn rule_arn(region: &str, stack: &str, function: &str, event: &str) -> String {
    format!("arn:aws:events:{region}:{LOCAL_ACCOUNT}:rule/{stack}-{function}{event}")
}

/// The event EventBridge sends for a tick of rule `rule_arn` at `time`
/// (`aws_lambda_events::event::cloudwatch_events::CloudWatchEvent`).
pub fn scheduled_event(rule_arn: &str, region: &str, time: DateTime<Utc>) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::now_v7().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    })
}

/// Invokes the function every period until the task is aborted.
pub async fn run(source: ScheduleSource) {
    let period = source.period.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let event = source
            .input
            .clone()
            .unwrap_or_else(|| scheduled_event(&source.rule_arn, &source.region, Utc::now()));
        Counters::add(&source.target.counters.records_in, 1);
        for attempt in 0..=ASYNC_RETRIES {
            if attempt > 0 {
                Counters::add(&source.target.counters.retried, 1);
                tokio::time::sleep(source.target.tuning.retry_pause(attempt)).await;
            }
            match source.target.invoke(event.clone()).await {
                Ok(_) => {
                    Counters::add(&source.target.counters.ok, 1);
                    break;
                }
                Err(e) => {
                    Counters::add(&source.target.counters.function_errors, 1);
                    tracing::warn!(function = %source.target.function, rule = %source.rule_arn, attempt, error = %e, "scheduled invocation failed");
                    if attempt == ASYNC_RETRIES {
                        Counters::add(&source.target.counters.failed, 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EventHandler, HandlerError, Tuning, event_handler};
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_event_is_the_one_eventbridge_sends() {
        let arn = rule_arn("eu-west-1", "st", "SagaFunction", "Deadlines");
        assert_eq!(
            arn,
            "arn:aws:events:eu-west-1:123456789012:rule/st-SagaFunctionDeadlines"
        );
        let time = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.890Z")
            .expect("valid")
            .with_timezone(&Utc);
        let e = scheduled_event(&arn, "eu-west-1", time);
        assert_eq!(e["detail-type"], "Scheduled Event");
        assert_eq!(e["source"], "aws.events");
        assert_eq!(e["time"], "2026-03-04T05:06:07Z");
        assert_eq!(e["resources"], json!([arn]));
        assert_eq!(e["detail"], json!({}));
        assert!(uuid::Uuid::parse_str(e["id"].as_str().expect("id")).is_ok());
    }

    fn source(handler: EventHandler, input: Option<Value>) -> (ScheduleSource, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let source = ScheduleSource {
            rule_arn: rule_arn("us-east-1", "st", "F", "Tick"),
            region: "us-east-1".into(),
            period: Duration::from_millis(40),
            input,
            target: Target {
                function: "F".into(),
                handler,
                timeout: Duration::from_secs(1),
                counters: counters.clone(),
                tuning: Tuning {
                    idle_poll: Duration::from_millis(1),
                    shard_poll: Duration::from_millis(1),
                    retry_backoff: Duration::from_millis(1),
                    sqs_visibility_timeout: None,
                },
            },
        };
        (source, counters)
    }

    #[tokio::test]
    async fn ticks_come_at_the_period_and_failures_are_retried_twice() {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = seen.clone();
        let handler = event_handler(move |e| {
            let log = log.clone();
            async move {
                let mut log = log.lock().expect("log");
                log.push(e);
                // The first tick fails on every attempt; later ones succeed.
                if log.len() <= 3 {
                    Err("down".to_owned())
                } else {
                    Ok(Value::Null)
                }
            }
        });
        let (source, counters) = source(handler, None);
        let task = tokio::spawn(run(source));
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert!(
            seen.lock().expect("log").is_empty(),
            "none before one period"
        );
        let start = std::time::Instant::now();
        while counters.snapshot().ok < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{:?}",
                counters.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let stats = counters.snapshot();
        assert_eq!(stats.failed, 1, "{stats:?}");
        assert_eq!(stats.retried, 2, "{stats:?}");
        assert_eq!(stats.function_errors, 3, "{stats:?}");
        assert!(stats.records_in >= 3, "{stats:?}");
        let seen = seen.lock().expect("log");
        assert_eq!(seen[0], seen[1], "a retry resends the same event");
        assert_ne!(seen[0]["id"], seen[3]["id"], "each tick is a new event");
        assert!(seen.iter().all(|e| e["detail-type"] == "Scheduled Event"));
    }

    #[tokio::test]
    async fn a_rule_input_replaces_the_event() {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = seen.clone();
        let handler = event_handler(move |e| {
            let log = log.clone();
            async move {
                log.lock().expect("log").push(e);
                Ok::<_, HandlerError>(Value::Null)
            }
        });
        let (source, counters) = source(handler, Some(json!({"job": "sweep"})));
        let task = tokio::spawn(run(source));
        let start = std::time::Instant::now();
        while counters.snapshot().ok < 1 {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        assert_eq!(seen.lock().expect("log")[0], json!({"job": "sweep"}));
    }
}
