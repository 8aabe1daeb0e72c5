//! DynamoDB stream records of the events table -> event envelopes.
//!
//! Only `INSERT`s of commit items (`stream_id`, `version`, `count`, `events`, `metadata`) carry
//! events; every other record (a `MODIFY`, a `REMOVE`, an item of another shape) is skipped.
//! A commit's new image is decoded by the same code as [`DynamoEventStore`] reads, so the
//! stream and the table always agree on what an event is.
//!
//! [`DynamoEventStore`]: crate::DynamoEventStore

use crate::DynamoEventStore;
use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord, StreamViewType};
use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use eventfold::store::validate_append;
use eventfold::{EventEnvelope, StoreError};
use serde_dynamo::AttributeValue as StreamValue;
use std::collections::HashMap;

/// Attributes that make an item a commit.
const COMMIT_ATTRIBUTES: [&str; 5] = ["stream_id", "version", "count", "events", "metadata"];

/// What a stream record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// An inserted commit: its events, oldest first.
    Commit(Vec<EventEnvelope>),
    /// Nothing to publish, and why.
    Skipped(&'static str),
}

/// Decodes one record of the events table's stream.
///
/// Fails (the record must not be acknowledged) only for an `INSERT` whose image is missing
/// (a stream without `NEW_IMAGE`) or a commit item that cannot be read.
pub fn decode_record(record: &EventRecord) -> Result<Decoded, StoreError> {
    if record.event_name != "INSERT" {
        return Ok(Decoded::Skipped("not an INSERT"));
    }
    let image = &record.change.new_image;
    if image.is_empty() {
        let stream_id = match record.change.keys.get("stream_id") {
            Some(StreamValue::S(s)) => s.clone(),
            _ => String::new(),
        };
        return Err(StoreError::Corrupt {
            stream_id,
            detail: format!(
                "INSERT record {} has no new image: the stream must carry NEW_IMAGE",
                record.event_id
            ),
        });
    }
    if !COMMIT_ATTRIBUTES.iter().all(|a| image.contains_key(*a)) {
        return Ok(Decoded::Skipped("not a commit item"));
    }
    let item = to_sdk_item(image);
    let Some(SdkValue::S(stream_id)) = item.get("stream_id") else {
        return Err(StoreError::Corrupt {
            stream_id: String::new(),
            detail: format!("record {}: stream_id is not a string", record.event_id),
        });
    };
    let commit = DynamoEventStore::decode(stream_id, &item, true)?;
    Ok(Decoded::Commit(commit.events))
}

/// A stream image (as `aws_lambda_events` carries it) as an SDK item, through
/// `serde_dynamo`'s conversions.
pub fn to_sdk_item(item: &serde_dynamo::Item) -> HashMap<String, SdkValue> {
    let item: HashMap<String, StreamValue> = item.clone().into();
    item.into_iter().map(|(k, v)| (k, v.into())).collect()
}

/// An SDK item (e.g. read with `GetItem`) as a stream image.
///
/// `serde_dynamo` has no stream form for an attribute type this SDK does not know
/// (`AttributeValue::Unknown`, only ever produced by a newer service); items here are commits
/// this crate wrote, which use none.
pub fn from_sdk_item(item: &HashMap<String, SdkValue>) -> serde_dynamo::Item {
    item.iter()
        .map(|(k, v)| (k.clone(), StreamValue::from(v.clone())))
        .collect::<HashMap<_, _>>()
        .into()
}

/// The `INSERT` record the events table's stream carries for a commit of `events` (one
/// stream, contiguous versions, shared metadata), with the item exactly as
/// [`DynamoEventStore`] writes it: for tests, tools and sample events.
pub fn insert_record(
    events: &[EventEnvelope],
    sequence_number: &str,
) -> Result<EventRecord, StoreError> {
    let first = events
        .first()
        .ok_or_else(|| StoreError::Invalid("a commit needs at least one event".into()))?;
    let stream_id = first.stream_id.clone();
    let expected = first.version.saturating_sub(1);
    validate_append(&stream_id, expected, events, None)?;
    let item = DynamoEventStore::encode(&stream_id, expected, events, None)?;
    let image = from_sdk_item(&item);
    let keys: HashMap<String, StreamValue> = ["stream_id", "version"]
        .into_iter()
        .filter_map(|k| image.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    let mut change = StreamRecord::default();
    change.approximate_creation_date_time = chrono::Utc::now();
    change.keys = keys.into();
    change.size_bytes = i64::try_from(crate::dynamodb::item_size(&item)).unwrap_or(i64::MAX);
    change.new_image = image;
    change.sequence_number = Some(sequence_number.to_owned());
    change.stream_view_type = Some(StreamViewType::NewImage);
    let mut record = EventRecord::default();
    record.aws_region = "us-east-1".to_owned();
    record.change = change;
    record.event_id = format!("{stream_id}@{}", first.version);
    record.event_name = "INSERT".to_owned();
    record.event_source = Some("aws:dynamodb".to_owned());
    record.event_version = Some("1.1".to_owned());
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::dynamodb::Event;
    use aws_sdk_dynamodb::primitives::Blob;
    use eventfold::StreamId;
    use eventfold_testkit::event_store::sample_events;

    fn commit() -> Vec<EventEnvelope> {
        let stream = StreamId::new("acme", "Order", "o-1").expect("valid");
        sample_events(&stream, 4, 3)
    }

    #[test]
    fn a_stored_commit_decodes_identically_through_the_stream() {
        let events = commit();
        let item = DynamoEventStore::encode("acme/Order-o-1", 4, &events, None).expect("encodes");
        let from_table = DynamoEventStore::decode("acme/Order-o-1", &item, true)
            .expect("store decodes")
            .events;
        assert_eq!(from_table, events);

        // Through the wire: Lambda hands the function the record as JSON.
        let record = insert_record(&events, "100").expect("record");
        let json = serde_json::to_string(&serde_json::json!({"Records": [record]})).expect("json");
        let event: Event = serde_json::from_str(&json).expect("a DynamoDB stream event");
        let image = to_sdk_item(&event.records[0].change.new_image);
        let mut stored = item.clone();
        stored.remove("committed_at");
        let mut streamed = image.clone();
        streamed.remove("committed_at");
        assert_eq!(streamed, stored, "the stream image is the stored item");
        match decode_record(&event.records[0]).expect("decodes") {
            Decoded::Commit(from_stream) => assert_eq!(from_stream, from_table),
            other => panic!("expected a commit, got {other:?}"),
        }
        assert_eq!(
            event.records[0].change.sequence_number.as_deref(),
            Some("100")
        );
    }

    #[test]
    fn other_records_are_skipped_and_broken_commits_fail() {
        let events = commit();
        let mut modify = insert_record(&events, "1").expect("record");
        modify.event_name = "MODIFY".into();
        assert_eq!(
            decode_record(&modify).expect("skips"),
            Decoded::Skipped("not an INSERT")
        );

        let mut other = insert_record(&events, "2").expect("record");
        other.change.new_image.remove("events");
        assert_eq!(
            decode_record(&other).expect("skips"),
            Decoded::Skipped("not a commit item")
        );

        let mut broken = insert_record(&events, "3").expect("record");
        broken
            .change
            .new_image
            .insert("count".into(), StreamValue::N("7".into()));
        assert!(matches!(
            decode_record(&broken),
            Err(StoreError::Corrupt { .. })
        ));

        let mut keys_only = insert_record(&events, "4").expect("record");
        keys_only.change.new_image =
            serde_dynamo::Item::from(HashMap::<String, StreamValue>::new());
        assert!(matches!(
            decode_record(&keys_only),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn values_convert_both_ways() {
        let sdk = SdkValue::M(HashMap::from([
            ("b".to_owned(), SdkValue::B(Blob::new(vec![1, 2]))),
            ("ss".to_owned(), SdkValue::Ss(vec!["x".into()])),
            ("ns".to_owned(), SdkValue::Ns(vec!["1".into()])),
            ("bs".to_owned(), SdkValue::Bs(vec![Blob::new(vec![3])])),
            (
                "l".to_owned(),
                SdkValue::L(vec![SdkValue::Null(true), SdkValue::Bool(false)]),
            ),
            ("n".to_owned(), SdkValue::N("-1.5".into())),
        ]));
        let item = HashMap::from([("v".to_owned(), sdk)]);
        assert_eq!(to_sdk_item(&from_sdk_item(&item)), item);
    }
}
