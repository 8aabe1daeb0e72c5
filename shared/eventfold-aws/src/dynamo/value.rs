//! JSON <-> DynamoDB attribute values, and DynamoDB's item-size arithmetic.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Converts JSON to an attribute value, keeping maps and lists native (readable in the console).
pub fn to_attr(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attr).collect()),
        Value::Object(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect())
        }
    }
}

/// Converts an attribute value back to JSON; sets and binary have no JSON form and are refused.
pub fn from_attr(attr: &AttributeValue) -> Result<Value, String> {
    Ok(match attr {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => Value::Number(parse_number(n)?),
        AttributeValue::L(items) => {
            Value::Array(items.iter().map(from_attr).collect::<Result<_, _>>()?)
        }
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), from_attr(v)?)))
                .collect::<Result<Map<_, _>, String>>()?,
        ),
        other => return Err(format!("attribute {other:?} has no JSON form")),
    })
}

fn parse_number(n: &str) -> Result<Number, String> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = n.parse::<u64>() {
        return Ok(u.into());
    }
    n.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("number {n} is not representable"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_attributes() {
        let v = json!({"a": [1, -2, 1.5, u64::MAX, "s", "", null, true], "m": {"n": {}}, "l": []});
        assert_eq!(from_attr(&to_attr(&v)).expect("round trip"), v);
    }

    #[test]
    fn sets_are_refused_and_sizes_grow_with_content() {
        assert!(from_attr(&AttributeValue::Ss(vec!["a".into()])).is_err());
        let mut small = HashMap::new();
        small.insert("k".to_owned(), to_attr(&json!("x")));
        let mut big = HashMap::new();
        big.insert("k".to_owned(), to_attr(&json!("x".repeat(1000))));
        assert_eq!(item_size(&small), 2);
        assert!(item_size(&big) >= 1001);
    }
}
