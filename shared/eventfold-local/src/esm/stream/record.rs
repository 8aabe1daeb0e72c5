//! DynamoDB stream records as the records of the Lambda DynamoDB event.

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A DynamoDB stream attribute value as DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, ...).
pub fn attribute_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": STANDARD.encode(b.as_ref()) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| STANDARD.encode(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        _ => json!({ "NULL": true }),
    }
}

/// An item (attribute map) as DynamoDB JSON.
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A stream record as the record of the Lambda DynamoDB event
/// (`aws_lambda_events::event::dynamodb::EventRecord`).
pub fn record_json(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut change = Map::new();
    if let Some(d) = &record.dynamodb {
        if let Some(t) = d.approximate_creation_date_time {
            // Epoch seconds, as Lambda sends them.
            let secs = t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9;
            change.insert("ApproximateCreationDateTime".into(), json!(secs));
        }
        for (key, image) in [
            ("Keys", &d.keys),
            ("NewImage", &d.new_image),
            ("OldImage", &d.old_image),
        ] {
            if let Some(item) = image {
                change.insert(key.into(), item_json(item));
            }
        }
        if let Some(s) = &d.sequence_number {
            change.insert("SequenceNumber".into(), json!(s));
        }
        change.insert("SizeBytes".into(), json!(d.size_bytes.unwrap_or(0)));
        if let Some(v) = &d.stream_view_type {
            change.insert("StreamViewType".into(), json!(v.as_str()));
        }
    }
    let mut out = json!({
        "eventID": record.event_id.clone().unwrap_or_default(),
        "eventName": record.event_name.as_ref().map(|n| n.as_str()).unwrap_or_default(),
        "eventVersion": record.event_version.clone().unwrap_or_else(|| "1.1".to_owned()),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region.clone().unwrap_or_else(|| region.to_owned()),
        "dynamodb": Value::Object(change),
        "eventSourceARN": stream_arn,
    });
    if let Some(identity) = &record.user_identity {
        out["userIdentity"] = json!({
            "type": identity.r#type.clone().unwrap_or_default(),
            "principalId": identity.principal_id.clone().unwrap_or_default(),
        });
    }
    out
}

/// The region of an ARN (`arn:aws:dynamodb:REGION:...`).
pub(super) fn arn_region(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or("us-east-1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    fn sample() -> Record {
        let keys = HashMap::from([
            (
                "stream_id".to_owned(),
                AttributeValue::S("t/Order-1".into()),
            ),
            ("version".to_owned(), AttributeValue::N("3".into())),
        ]);
        let mut image = keys.clone();
        image.insert(
            "events".into(),
            AttributeValue::L(vec![AttributeValue::M(HashMap::from([
                ("type".to_owned(), AttributeValue::S("OrderPlaced".into())),
                ("ok".to_owned(), AttributeValue::Bool(true)),
                ("none".to_owned(), AttributeValue::Null(true)),
                (
                    "tags".to_owned(),
                    AttributeValue::Ss(vec!["a".into(), "b".into()]),
                ),
                ("nums".to_owned(), AttributeValue::Ns(vec!["1".into()])),
            ]))]),
        );
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
                    .set_keys(Some(keys))
                    .set_new_image(Some(image))
                    .sequence_number("1100000000017454423009")
                    .size_bytes(120)
                    .stream_view_type(StreamViewType::NewImage)
                    .build(),
            )
            .build()
    }

    #[test]
    fn records_deserialize_into_the_lambda_dynamodb_event() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024";
        let rec = record_json(&sample(), arn, "us-east-1");
        assert_eq!(rec["eventSource"], "aws:dynamodb");
        assert_eq!(rec["eventSourceARN"], arn);
        assert_eq!(rec["dynamodb"]["Keys"]["version"], json!({"N": "3"}));
        let event: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(json!({ "Records": [rec] })).expect("a Lambda DynamoDB event");
        let r = &event.records[0];
        assert_eq!(r.event_name, "INSERT");
        assert_eq!(r.event_id, "e1");
        assert_eq!(r.aws_region, "us-east-1");
        assert_eq!(r.event_source_arn.as_deref(), Some(arn));
        assert_eq!(
            r.change.sequence_number.as_deref(),
            Some("1100000000017454423009")
        );
        assert_eq!(r.change.size_bytes, 120);
        assert_eq!(
            r.change.approximate_creation_date_time.timestamp(),
            1_700_000_000
        );
        assert_eq!(r.change.keys.len(), 2);
        // The image reads back through serde_dynamo.
        #[derive(serde::Deserialize)]
        struct Commit {
            stream_id: String,
            version: u64,
            events: Vec<Value>,
        }
        let commit: Commit =
            serde_dynamo::from_item(r.change.new_image.clone()).expect("the image decodes");
        assert_eq!(commit.stream_id, "t/Order-1");
        assert_eq!(commit.version, 3);
        assert_eq!(commit.events[0]["type"], "OrderPlaced");
        assert_eq!(commit.events[0]["tags"], json!(["a", "b"]));
        assert_eq!(commit.events[0]["ok"], json!(true));
    }

    #[test]
    fn attribute_values_render_as_dynamodb_json() {
        assert_eq!(
            attribute_json(&AttributeValue::B(Blob::new(b"hi".to_vec()))),
            json!({"B": "aGk="})
        );
        assert_eq!(
            attribute_json(&AttributeValue::L(vec![AttributeValue::Null(true)])),
            json!({"L": [{"NULL": true}]})
        );
        assert_eq!(
            attribute_json(&AttributeValue::Bs(vec![Blob::new(b"hi".to_vec())])),
            json!({"BS": ["aGk="]})
        );
    }
}
