//! What a request to the emulator asks, in IAM's terms: the caller's access key (from the
//! SigV4 `Authorization` header) and each action with the resource it is authorized on, as
//! AWS authorizes it:
//!
//! - DynamoDB (JSON, `X-Amz-Target: DynamoDB_20120810.Op`): `dynamodb:Op` on the table
//!   (`IndexName` -> `table/T/index/I`); `BatchGetItem`/`BatchWriteItem` on each table they
//!   name; `TransactWriteItems`/`TransactGetItems` as the item actions they carry
//!   (`PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem`, `GetItem`) on each item's
//!   table; `ListTables` on `*`.
//! - DynamoDB Streams (`DynamoDBStreams_20120810.Op`): `dynamodb:Op` on the stream ARN (for
//!   `GetRecords`, the stream the shard iterator belongs to); `ListStreams` on `*`.
//! - SQS, JSON (`AmazonSQS.Op`) or query (`Action=Op`): `sqs:Op` on the queue of `QueueUrl`
//!   (batch operations as their single action: `SendMessageBatch` is `sqs:SendMessage`).
//! - SNS, query (`Action=Op`): `sns:Op` on `TopicArn` (or `TargetArn`); `PublishBatch` is
//!   `sns:Publish`.
//! - KMS (JSON 1.1, `X-Amz-Target: TrentService.Op`): `kms:Op` on the key its `KeyId` names
//!   (a key ARN, or a key id made an ARN); an alias or no `KeyId` is not understood (IAM
//!   authorizes the key an alias points to, which the proxy cannot see).
//!
//! Anything else is [`Classification::Unknown`]: the proxy refuses it rather than let it
//! through unchecked.

use serde_json::Value;
use std::collections::BTreeSet;

/// The wire protocol of a request (and so of its error answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// DynamoDB and DynamoDB Streams: `application/x-amz-json-1.0`.
    DynamoDb,
    /// SQS's JSON protocol (`AmazonSQS.*`).
    SqsJson,
    /// The query protocol (form-encoded `Action=`): SNS, and SQS for older clients.
    Query,
    /// KMS: `application/x-amz-json-1.1` (`TrentService.*`).
    Kms,
}

/// One authorization check a request needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Check {
    /// `service:Action`.
    pub action: String,
    /// The resource ARN (or `*`).
    pub resource: String,
}

/// What the proxy makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Understood: these checks must all pass.
    Checks {
        /// Its protocol.
        protocol: Protocol,
        /// The operation as sent (`BatchGetItem`).
        operation: String,
        /// Each action on each resource, deduplicated.
        checks: Vec<Check>,
    },
    /// Not understood (why); refused for a function.
    Unknown {
        /// The protocol, when that much is known.
        protocol: Option<Protocol>,
        /// What is missing.
        reason: String,
    },
}

/// The access key id and service of a SigV4 `Authorization` header
/// (`AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/dynamodb/aws4_request, ...`).
pub fn credential(authorization: &str) -> Option<(&str, &str)> {
    let scope = authorization.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    let key = parts.next()?;
    let service = parts.nth(2)?;
    Some((key, service))
}

/// Where ARNs are built: the stack's region and account.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Region.
    pub region: String,
    /// Account id.
    pub account: String,
}

impl Scope {
    fn table(&self, name: &str) -> String {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{name}",
            self.region, self.account
        )
    }

    /// The ARN of the queue a `QueueUrl` names (its last path segment).
    fn queue(&self, url: &str) -> Option<String> {
        let name = url.trim_end_matches('/').rsplit('/').next()?;
        (!name.is_empty()).then(|| format!("arn:aws:sqs:{}:{}:{name}", self.region, self.account))
    }
}

/// Classifies a request by its `X-Amz-Target` header, credential scope service and body.
pub fn classify(scope: &Scope, target: Option<&str>, service: &str, body: &[u8]) -> Classification {
    match target {
        Some(t)
            if t.starts_with("DynamoDB_20120810.")
                || t.starts_with("DynamoDBStreams_20120810.") =>
        {
            json_request(scope, Protocol::DynamoDb, t, body, dynamodb)
        }
        Some(t) if t.starts_with("AmazonSQS.") => {
            json_request(scope, Protocol::SqsJson, t, body, sqs_json)
        }
        Some(t) if t.starts_with("TrentService.") => {
            json_request(scope, Protocol::Kms, t, body, kms)
        }
        Some(t) => Classification::Unknown {
            protocol: None,
            reason: format!("unknown X-Amz-Target {t}"),
        },
        None => query(scope, service, body),
    }
}

/// Why a request is not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclear(pub String);

impl From<&str> for Unclear {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Unclear {
    fn from(s: String) -> Self {
        Self(s)
    }
}

fn json_request(
    scope: &Scope,
    protocol: Protocol,
    target: &str,
    body: &[u8],
    f: fn(&Scope, &str, &Value) -> Result<Vec<Check>, Unclear>,
) -> Classification {
    let operation = target
        .split_once('.')
        .map_or(target, |(_, op)| op)
        .to_owned();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Classification::Unknown {
                    protocol: Some(protocol),
                    reason: format!("{operation}: the body is not JSON ({e})"),
                };
            }
        }
    };
    finish(protocol, operation.clone(), f(scope, &operation, &body))
}

fn finish(
    protocol: Protocol,
    operation: String,
    checks: Result<Vec<Check>, Unclear>,
) -> Classification {
    match checks {
        Ok(checks) => {
            let checks: BTreeSet<Check> = checks.into_iter().collect();
            Classification::Checks {
                protocol,
                operation,
                checks: checks.into_iter().collect(),
            }
        }
        Err(Unclear(reason)) => Classification::Unknown {
            protocol: Some(protocol),
            reason: format!("{operation}: {reason}"),
        },
    }
}

fn check(action: &str, resource: impl Into<String>) -> Check {
    Check {
        action: action.to_owned(),
        resource: resource.into(),
    }
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Unclear> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Unclear(format!("no {name}")))
}

fn dynamodb(scope: &Scope, op: &str, body: &Value) -> Result<Vec<Check>, Unclear> {
    let action = format!("dynamodb:{op}");
    let tables = |key: &str| -> Result<Vec<String>, Unclear> {
        let items = body
            .get(key)
            .and_then(Value::as_object)
            .ok_or_else(|| Unclear(format!("no {key}")))?;
        Ok(items.keys().cloned().collect())
    };
    Ok(match op {
        "BatchGetItem" | "BatchWriteItem" => tables("RequestItems")?
            .iter()
            .map(|t| check(&action, scope.table(t)))
            .collect(),
        "TransactWriteItems" | "TransactGetItems" => {
            let items = body
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or("no TransactItems")?;
            let mut out = Vec::new();
            for item in items {
                let (kind, inner) = item
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .ok_or("an empty transaction item")?;
                let item_action = match kind.as_str() {
                    "Put" => "dynamodb:PutItem",
                    "Update" => "dynamodb:UpdateItem",
                    "Delete" => "dynamodb:DeleteItem",
                    "ConditionCheck" => "dynamodb:ConditionCheckItem",
                    "Get" => "dynamodb:GetItem",
                    other => return Err(Unclear(format!("unknown transaction item {other}"))),
                };
                out.push(check(item_action, scope.table(field(inner, "TableName")?)));
            }
            out
        }
        "ListTables" | "ListStreams" | "DescribeLimits" | "DescribeEndpoints" => {
            vec![check(&action, "*")]
        }
        "DescribeStream" | "GetShardIterator" => vec![check(&action, field(body, "StreamArn")?)],
        "GetRecords" => {
            let iterator = field(body, "ShardIterator")?;
            // Shard iterators start with their stream's ARN (`arn...|1|...`), in AWS and moto.
            let stream = iterator.split('|').next().filter(|s| s.starts_with("arn:"));
            vec![check(
                &action,
                stream.ok_or("a shard iterator without its stream ARN")?,
            )]
        }
        "ExecuteStatement" | "BatchExecuteStatement" | "ExecuteTransaction" => {
            return Err("PartiQL is not classified".into());
        }
        _ => {
            let table = scope.table(field(body, "TableName")?);
            let resource = match body.get("IndexName").and_then(Value::as_str) {
                Some(index) => format!("{table}/index/{index}"),
                None => table,
            };
            vec![check(&action, resource)]
        }
    })
}

/// The IAM action of an SQS operation: batch operations are authorized as their single one.
fn kms(scope: &Scope, op: &str, body: &Value) -> Result<Vec<Check>, Unclear> {
    let key = field(body, "KeyId")?;
    let arn = if key.starts_with("arn:") {
        key.to_owned()
    } else if key.starts_with("alias/") {
        return Err(Unclear(format!("KeyId {key} is an alias")));
    } else {
        format!("arn:aws:kms:{}:{}:key/{key}", scope.region, scope.account)
    };
    Ok(vec![check(&format!("kms:{op}"), arn)])
}

fn sqs_action(op: &str) -> String {
    format!("sqs:{}", op.strip_suffix("Batch").unwrap_or(op))
}

fn sqs_json(scope: &Scope, op: &str, body: &Value) -> Result<Vec<Check>, Unclear> {
    let action = sqs_action(op);
    sqs_checks(
        scope,
        op,
        &action,
        body.get("QueueUrl").and_then(Value::as_str),
        body.get("QueueName").and_then(Value::as_str),
    )
}

fn sqs_checks(
    scope: &Scope,
    op: &str,
    action: &str,
    url: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<Check>, Unclear> {
    if op == "ListQueues" {
        return Ok(vec![check(action, "*")]);
    }
    let arn = match (url, name) {
        (Some(url), _) => scope.queue(url),
        (None, Some(name)) => Some(format!(
            "arn:aws:sqs:{}:{}:{name}",
            scope.region, scope.account
        )),
        (None, None) => None,
    };
    Ok(vec![check(action, arn.ok_or("no QueueUrl")?)])
}

fn query(scope: &Scope, service: &str, body: &[u8]) -> Classification {
    let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(op) = get("Action") else {
        return Classification::Unknown {
            protocol: None,
            reason: "no X-Amz-Target and no Action".into(),
        };
    };
    let checks = match service {
        "sns" => {
            let action = format!("sns:{}", op.strip_suffix("Batch").unwrap_or(op));
            match op {
                "ListTopics" => Ok(vec![check(&action, "*")]),
                _ => get("TopicArn")
                    .or_else(|| get("TargetArn"))
                    .map(|arn| vec![check(&action, arn)])
                    .ok_or_else(|| Unclear("no TopicArn".into())),
            }
        }
        "sqs" => sqs_checks(
            scope,
            op,
            &sqs_action(op),
            get("QueueUrl"),
            get("QueueName"),
        ),
        other => Err(Unclear(format!(
            "the query protocol of {other} is not classified"
        ))),
    };
    finish(Protocol::Query, op.to_owned(), checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        Scope {
            region: "us-east-1".into(),
            account: "123456789012".into(),
        }
    }

    const T: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/";

    fn checks(target: &str, body: Value) -> Vec<(String, String)> {
        match classify(
            &scope(),
            Some(target),
            "dynamodb",
            body.to_string().as_bytes(),
        ) {
            Classification::Checks { checks, .. } => {
                checks.into_iter().map(|c| (c.action, c.resource)).collect()
            }
            other => panic!("not classified: {other:?}"),
        }
    }

    fn pair(a: &str, r: &str) -> (String, String) {
        (a.to_owned(), r.to_owned())
    }

    #[test]
    fn reads_the_access_key_and_service_of_a_sigv4_header() {
        let h = "AWS4-HMAC-SHA256 Credential=LOCALProjectorFunction/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(credential(h), Some(("LOCALProjectorFunction", "dynamodb")));
        assert_eq!(credential("Bearer x"), None);
    }

    #[test]
    fn dynamodb_item_and_index_requests() {
        assert_eq!(
            checks(
                "DynamoDB_20120810.GetItem",
                json!({"TableName": "st-Things", "Key": {}})
            ),
            [pair("dynamodb:GetItem", &format!("{T}st-Things"))]
        );
        assert_eq!(
            checks(
                "DynamoDB_20120810.Query",
                json!({"TableName": "st-Things", "IndexName": "gsi1"})
            ),
            [pair("dynamodb:Query", &format!("{T}st-Things/index/gsi1"))]
        );
    }

    #[test]
    fn batches_are_checked_per_table_and_transactions_per_item_action() {
        assert_eq!(
            checks(
                "DynamoDB_20120810.BatchGetItem",
                json!({"RequestItems": {"a": {}, "b": {}}})
            ),
            [
                pair("dynamodb:BatchGetItem", &format!("{T}a")),
                pair("dynamodb:BatchGetItem", &format!("{T}b"))
            ]
        );
        assert_eq!(
            checks(
                "DynamoDB_20120810.BatchWriteItem",
                json!({"RequestItems": {"a": []}})
            ),
            [pair("dynamodb:BatchWriteItem", &format!("{T}a"))]
        );
        let tx = json!({"TransactItems": [
            {"Put": {"TableName": "a", "Item": {}}},
            {"Update": {"TableName": "a", "Key": {}}},
            {"ConditionCheck": {"TableName": "b", "Key": {}}},
            {"Delete": {"TableName": "b", "Key": {}}},
            {"Put": {"TableName": "a", "Item": {}}},
        ]});
        assert_eq!(
            checks("DynamoDB_20120810.TransactWriteItems", tx),
            [
                pair("dynamodb:ConditionCheckItem", &format!("{T}b")),
                pair("dynamodb:DeleteItem", &format!("{T}b")),
                pair("dynamodb:PutItem", &format!("{T}a")),
                pair("dynamodb:UpdateItem", &format!("{T}a")),
            ]
        );
        assert_eq!(
            checks(
                "DynamoDB_20120810.TransactGetItems",
                json!({"TransactItems": [{"Get": {"TableName": "a"}}]})
            ),
            [pair("dynamodb:GetItem", &format!("{T}a"))]
        );
    }

    #[test]
    fn stream_requests_name_the_stream() {
        let stream = format!("{T}st-Events/stream/2026-01-01T00:00:00.000");
        assert_eq!(
            checks(
                "DynamoDBStreams_20120810.GetShardIterator",
                json!({"StreamArn": stream, "ShardId": "s"})
            ),
            [pair("dynamodb:GetShardIterator", &stream)]
        );
        assert_eq!(
            checks(
                "DynamoDBStreams_20120810.GetRecords",
                json!({"ShardIterator": format!("{stream}|1|AAAA")})
            ),
            [pair("dynamodb:GetRecords", &stream)]
        );
        assert_eq!(
            checks(
                "DynamoDBStreams_20120810.ListStreams",
                json!({"TableName": "st-Events"})
            ),
            [pair("dynamodb:ListStreams", "*")]
        );
    }

    #[test]
    fn sqs_json_and_query_requests_name_the_queue() {
        let q = "arn:aws:sqs:us-east-1:123456789012:st-work.fifo";
        assert_eq!(
            checks(
                "AmazonSQS.DeleteMessageBatch",
                json!({"QueueUrl": "http://127.0.0.1:1/123456789012/st-work.fifo", "Entries": []})
            ),
            [pair("sqs:DeleteMessage", q)]
        );
        let body = b"Action=SendMessageBatch&QueueUrl=http%3A%2F%2F127.0.0.1%3A1%2F123456789012%2Fst-work.fifo";
        match classify(&scope(), None, "sqs", body) {
            Classification::Checks {
                protocol, checks, ..
            } => {
                assert_eq!(protocol, Protocol::Query);
                assert_eq!(checks, [check("sqs:SendMessage", q)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sns_query_requests_name_the_topic() {
        let topic = "arn:aws:sns:us-east-1:123456789012:st-events.fifo";
        let body = format!(
            "Action=PublishBatch&Version=2010-03-31&TopicArn={}",
            topic.replace(':', "%3A")
        );
        match classify(&scope(), None, "sns", body.as_bytes()) {
            Classification::Checks {
                protocol,
                operation,
                checks,
            } => {
                assert_eq!(
                    (protocol, operation.as_str()),
                    (Protocol::Query, "PublishBatch")
                );
                assert_eq!(checks, [check("sns:Publish", topic)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kms_requests_name_the_key() {
        let arn = "arn:aws:kms:us-east-1:123456789012:key/k-1";
        assert_eq!(
            checks(
                "TrentService.GenerateDataKey",
                json!({"KeyId": arn, "KeySpec": "AES_256"})
            ),
            vec![pair("kms:GenerateDataKey", arn)]
        );
        assert_eq!(
            checks(
                "TrentService.Decrypt",
                json!({"KeyId": "k-1", "CiphertextBlob": "AA=="})
            ),
            vec![pair("kms:Decrypt", arn)]
        );
        for body in [
            json!({"KeyId": "alias/x"}),
            json!({"CiphertextBlob": "AA=="}),
        ] {
            let c = classify(
                &scope(),
                Some("TrentService.Decrypt"),
                "kms",
                body.to_string().as_bytes(),
            );
            assert!(
                matches!(
                    c,
                    Classification::Unknown {
                        protocol: Some(Protocol::Kms),
                        ..
                    }
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn what_is_not_understood_is_unknown() {
        let unknown = |c: Classification| matches!(c, Classification::Unknown { .. });
        assert!(unknown(classify(
            &scope(),
            Some("Kinesis_20131202.PutRecord"),
            "kinesis",
            b"{}"
        )));
        assert!(unknown(classify(
            &scope(),
            Some("DynamoDB_20120810.GetItem"),
            "dynamodb",
            b"{}"
        )));
        assert!(unknown(classify(
            &scope(),
            Some("DynamoDB_20120810.ExecuteStatement"),
            "dynamodb",
            b"{}"
        )));
        assert!(unknown(classify(
            &scope(),
            Some("DynamoDB_20120810.GetItem"),
            "dynamodb",
            b"not json"
        )));
        assert!(unknown(classify(&scope(), None, "sns", b"Version=1")));
        assert!(unknown(classify(&scope(), None, "kms", b"Action=Decrypt")));
        assert!(unknown(classify(&scope(), None, "sns", b"Action=Publish")));
    }
}
