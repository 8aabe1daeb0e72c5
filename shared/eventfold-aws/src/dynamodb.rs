//! The DynamoDB plumbing every table adapter shares: the constructors of a store on one
//! table (the crate-private `table_store!`), JSON <-> attribute values, attribute shorthands,
//! and DynamoDB's item-size arithmetic: shared by the event store and the read-model store.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_dynamo::aws_sdk_dynamodb_1::{from_attribute_value, to_attribute_value};
use serde_json::Value;
use std::collections::HashMap;

/// A string attribute.
pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A value with no form on the other side: JSON DynamoDB cannot hold, or an attribute (binary)
/// JSON cannot.
#[derive(Debug, thiserror::Error)]
pub enum AttrError {
    /// JSON to attribute value.
    #[error("JSON value has no attribute form: {0}")]
    ToAttribute(#[source] serde_dynamo::Error),
    /// Attribute value to JSON.
    #[error("attribute has no JSON form: {0}")]
    FromAttribute(#[source] serde_dynamo::Error),
}

/// Converts JSON to an attribute value, keeping maps and lists native (readable in the
/// console), through `serde_dynamo`.
pub fn to_attr(value: &Value) -> Result<AttributeValue, AttrError> {
    to_attribute_value(value).map_err(AttrError::ToAttribute)
}

/// Converts an attribute value back to JSON. Binary has no JSON form and is refused; a set
/// reads as a list.
pub fn from_attr(attr: &AttributeValue) -> Result<Value, AttrError> {
    from_attribute_value(attr.clone()).map_err(AttrError::FromAttribute)
}

/// DynamoDB's billed size of an item: attribute names plus values, lists and maps with their
/// overhead. Slightly generous for numbers, so a commit that passes here fits in the table.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + attr_size(v)).sum()
}

fn attr_size(attr: &AttributeValue) -> usize {
    match attr {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => 3 + items.iter().map(|v| 1 + attr_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + attr_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// The constructors every store on one DynamoDB table has (`new`, `from_sdk`, `table`), for
/// a struct with fields `client: aws_sdk_dynamodb::Client` and `table: String`.
macro_rules! table_store {
    ($store:ident) => {
        impl $store {
            /// A store on `table` through `client` (build the client once per cold start).
            pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
                Self {
                    client,
                    table: table.into(),
                }
            }

            /// A store on `table` with a client built from `sdk`.
            pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
                Self::new(aws_sdk_dynamodb::Client::new(sdk), table)
            }

            /// The table name.
            pub fn table(&self) -> &str {
                &self.table
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attr(v: &Value) -> AttributeValue {
        to_attr(v).expect("JSON has an attribute form")
    }

    #[test]
    fn json_round_trips_through_attributes() {
        let v = json!({"a": [1, -2, 1.5, u64::MAX, i64::MIN, "s", "", null, true], "m": {"n": {}}, "l": []});
        assert_eq!(from_attr(&attr(&v)).expect("round trip"), v);
        // Maps and lists stay native, numbers are DynamoDB numbers.
        let AttributeValue::M(m) = attr(&v) else {
            panic!("an object is a map")
        };
        assert!(matches!(&m["l"], AttributeValue::L(l) if l.is_empty()));
        assert!(matches!(&m["a"], AttributeValue::L(l) if l[2] == n("1.5")));
    }

    #[test]
    fn binary_is_refused_sets_read_as_lists_and_sizes_grow_with_content() {
        assert!(from_attr(&AttributeValue::B(vec![1].into())).is_err());
        assert_eq!(
            from_attr(&AttributeValue::Ss(vec!["a".into()])).expect("a set reads"),
            json!(["a"])
        );
        let small = HashMap::from([("k".to_owned(), attr(&json!("x")))]);
        let big = HashMap::from([("k".to_owned(), attr(&json!("x".repeat(1000))))]);
        assert_eq!(item_size(&small), 2);
        assert!(item_size(&big) >= 1001);
    }
}
