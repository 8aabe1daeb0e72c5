//! What `eventfold verify` reads from the stack's resources, with the operator's
//! credentials, without disturbing the consumers: the stack's outputs (`DescribeStacks`),
//! a stream's latest commit (`Query`, consistent), a read-model document (`GetItem`), the
//! consumers' failure notes and dead letters (the dead-letters table), and queue depths
//! (`GetQueueAttributes`; never `ReceiveMessage`, which would take messages from the
//! consumers).

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use eventfold_aws::{DynamoDeadLetterStore, DynamoReadModelStore};
use eventfold_consumers::deadletter::{DeadLetterStore, FailureNote, Filter};
use eventfold_consumers::projection::ReadModelStore;
use std::collections::BTreeMap;

/// The outputs `verify` needs, by key (the template's `Outputs`).
pub const REQUIRED_OUTPUTS: [&str; 9] = [
    "ApiUrl",
    "EventsTableName",
    "ReadModelsTableName",
    "DeadLettersTableName",
    "ProjectorQueueUrl",
    "SagaQueueUrl",
    "ProjectorDeadLetterQueueUrl",
    "SagaDeadLetterQueueUrl",
    "StreamFailureQueueUrl",
];

/// An AWS error as an operator reads it: its code and message (`AccessDeniedException: User:
/// … is not authorized to perform: …`) when the service answered, else the whole chain.
fn aws_error(e: impl ProvideErrorMetadata + std::error::Error + 'static) -> anyhow::Error {
    match e.code() {
        Some(code) => anyhow::anyhow!("{code}: {}", e.message().unwrap_or_default()),
        None => anyhow::anyhow!(eventfold_aws::diagnostic::cause_chain(&e)),
    }
}

/// The stack's outputs by key (`DescribeStacks`).
pub async fn outputs(sdk: &SdkConfig, stack: &str) -> Result<Outputs> {
    let out = aws_sdk_cloudformation::Client::new(sdk)
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("DescribeStacks {stack}"))?;
    let found = out
        .stacks()
        .first()
        .with_context(|| format!("no stack {stack}"))?;
    Ok(found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect())
}

/// A stack's outputs: value by key.
pub type Outputs = BTreeMap<String, String>;

/// The resources `verify` reads, from the outputs.
#[derive(Debug, Clone)]
pub struct Resources {
    /// Clients' configuration.
    pub sdk: SdkConfig,
    /// The outputs by key (holds every [`REQUIRED_OUTPUTS`] key).
    pub outputs: Outputs,
}

impl Resources {
    /// The output `key` (present: checked when built).
    pub fn output(&self, key: &str) -> &str {
        self.outputs.get(key).map_or("", String::as_str)
    }

    /// The highest version committed to `stream_id` (0: none), read consistently.
    pub async fn latest_version(&self, stream_id: &str) -> Result<u64> {
        let out = aws_sdk_dynamodb::Client::new(&self.sdk)
            .query()
            .table_name(self.output("EventsTableName"))
            .key_condition_expression("stream_id = :s")
            .expression_attribute_values(":s", AttributeValue::S(stream_id.to_owned()))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)
            .context("Query on the events table")?;
        Ok(out
            .items()
            .first()
            .and_then(|i| i.get("version"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// The document `key` of `view` for `tenant`: its data and checkpoint (the source
    /// stream's version applied), if the projector wrote it.
    pub async fn document(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, u64)>> {
        let store = DynamoReadModelStore::from_sdk(&self.sdk, self.output("ReadModelsTableName"));
        let doc = store.get(tenant, view, key).await?;
        Ok(doc.map(|d| (d.data, d.checkpoint)))
    }

    /// The failure notes `consumer` left on messages of `stream_id` (at most a page of the
    /// consumer's notes is searched: notes exist only for failures, and expire).
    pub async fn notes(&self, consumer: &str, stream_id: &str) -> Result<Vec<FailureNote>> {
        let out = aws_sdk_dynamodb::Client::new(&self.sdk)
            .query()
            .table_name(self.output("DeadLettersTableName"))
            .key_condition_expression("pk = :pk")
            .filter_expression("contains(#note, :stream)")
            .expression_attribute_names("#note", "note")
            .expression_attribute_values(":pk", AttributeValue::S(format!("_note#{consumer}")))
            .expression_attribute_values(":stream", AttributeValue::S(format!("\"{stream_id}\"")))
            .send()
            .await
            .map_err(aws_error)
            .context("Query on the dead-letters table")?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| i.get("note")?.as_s().ok())
            .filter_map(|json| serde_json::from_str::<FailureNote>(json).ok())
            .filter(|n| n.stream_id.as_deref() == Some(stream_id))
            .collect())
    }

    /// The dead letters of `tenant` for `stream_id`, any status.
    pub async fn dead_letters(&self, tenant: &str, stream_id: &str) -> Result<Vec<String>> {
        let store = DynamoDeadLetterStore::from_sdk(&self.sdk, self.output("DeadLettersTableName"));
        let filter = Filter {
            stream_id: Some(stream_id.to_owned()),
            ..Filter::default()
        };
        Ok(store
            .list(Some(tenant), &filter, 100)
            .await?
            .into_iter()
            .map(|l| {
                format!(
                    "{} letter {} ({}): {}",
                    l.consumer,
                    l.id,
                    l.status,
                    l.last_error.unwrap_or_default()
                )
            })
            .collect())
    }

    /// The queue's depth: (visible, in flight, delayed) messages, as `GetQueueAttributes`
    /// approximates them.
    pub async fn depth(&self, url_output: &str) -> Result<(u64, u64, u64)> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = aws_sdk_sqs::Client::new(&self.sdk)
            .get_queue_attributes()
            .queue_url(self.output(url_output))
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("GetQueueAttributes on {url_output}"))?;
        let get = |a: A| {
            out.attributes()
                .and_then(|m| m.get(&a))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
            get(A::ApproximateNumberOfMessagesDelayed),
        ))
    }
}
