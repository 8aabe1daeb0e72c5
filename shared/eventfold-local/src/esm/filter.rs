//! Event-source-mapping filter criteria: the EventBridge-style JSON patterns Lambda applies
//! to records before it batches them (`FilterCriteria.Filters[].Pattern`).
//!
//! A pattern is an object. A key whose value is an object descends into the record; a key
//! whose value is an array lists the accepted values of that field: exact values (strings,
//! numbers, booleans, null) and the matchers `prefix`, `suffix`, `equals-ignore-case`,
//! `anything-but`, `exists` and `numeric`. A field that is an array matches when any element
//! does. A record passes a pattern when every key matches, and passes the criteria when any
//! pattern matches (no patterns: everything passes).

use serde_json::{Map, Value};

/// Whether `record` passes `patterns` (any of them; an empty list lets everything pass).
pub fn passes(patterns: &[Value], record: &Value) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, record))
}

/// Whether `record` matches one pattern.
pub fn matches(pattern: &Value, record: &Value) -> bool {
    match pattern {
        Value::Object(keys) => matches_object(keys, record),
        // Not a valid pattern: Lambda rejects it at creation; here it lets nothing through.
        _ => false,
    }
}

fn matches_object(keys: &Map<String, Value>, record: &Value) -> bool {
    keys.iter().all(|(key, rule)| {
        let field = record.get(key);
        match rule {
            Value::Object(nested) => field.is_some_and(|f| matches_object(nested, f)),
            Value::Array(matchers) => matchers.iter().any(|m| matcher(m, field)),
            _ => false,
        }
    })
}

/// Values a field offers to a matcher: an array's elements, or the value itself.
fn values(field: &Value) -> Vec<&Value> {
    match field {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn matcher(m: &Value, field: Option<&Value>) -> bool {
    let Value::Object(op) = m else {
        // An exact value.
        return field.is_some_and(|f| values(f).into_iter().any(|v| same(m, v)));
    };
    let Some((name, arg)) = op.iter().next() else {
        return false;
    };
    if name == "exists" {
        return arg.as_bool() == Some(field.is_some());
    }
    let Some(field) = field else {
        return false;
    };
    let candidates = values(field);
    match name.as_str() {
        "prefix" => arg.as_str().is_some_and(|p| {
            candidates
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.starts_with(p)))
        }),
        "suffix" => arg.as_str().is_some_and(|p| {
            candidates
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.ends_with(p)))
        }),
        "equals-ignore-case" => arg.as_str().is_some_and(|p| {
            candidates
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(p)))
        }),
        "anything-but" => {
            let excluded: Vec<&Value> = match arg {
                Value::Array(items) => items.iter().collect(),
                Value::Object(inner) => {
                    // {"anything-but": {"prefix": "x"}}
                    return inner
                        .get("prefix")
                        .and_then(Value::as_str)
                        .is_some_and(|p| {
                            candidates
                                .iter()
                                .all(|v| v.as_str().is_none_or(|s| !s.starts_with(p)))
                        });
                }
                other => vec![other],
            };
            candidates
                .iter()
                .all(|v| !excluded.iter().any(|e| same(e, v)))
        }
        "numeric" => {
            let Some(conditions) = arg.as_array() else {
                return false;
            };
            candidates.iter().any(|v| {
                let Some(x) = v.as_f64() else {
                    return false;
                };
                conditions.chunks(2).all(|c| {
                    let (Some(op), Some(bound)) = (
                        c.first().and_then(Value::as_str),
                        c.get(1).and_then(Value::as_f64),
                    ) else {
                        return false;
                    };
                    match op {
                        "=" => x == bound,
                        "<" => x < bound,
                        "<=" => x <= bound,
                        ">" => x > bound,
                        ">=" => x >= bound,
                        _ => false,
                    }
                })
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_values_top_level_and_nested() {
        let insert = json!({"eventName": "INSERT", "dynamodb": {"NewImage": {"type": {"S": "A"}}}});
        let modify = json!({"eventName": "MODIFY", "dynamodb": {"NewImage": {"type": {"S": "B"}}}});
        let p = json!({"eventName": ["INSERT"]});
        assert!(matches(&p, &insert));
        assert!(!matches(&p, &modify));
        let nested = json!({"dynamodb": {"NewImage": {"type": {"S": ["B", "C"]}}}});
        assert!(!matches(&nested, &insert));
        assert!(matches(&nested, &modify));
        // All keys must match.
        let both =
            json!({"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"type": {"S": ["A"]}}}});
        assert!(!matches(&both, &insert) && !matches(&both, &modify));
        // Any pattern may match; none at all lets everything through.
        assert!(passes(
            &[json!({"eventName": ["REMOVE"]}), p.clone()],
            &insert
        ));
        assert!(passes(&[], &modify));
        assert!(!passes(&[p], &modify));
        // A missing field does not match a value.
        assert!(!matches(&json!({"nope": ["x"]}), &insert));
        assert!(!matches(
            &json!({"dynamodb": {"OldImage": {"x": ["y"]}}}),
            &insert
        ));
    }

    #[test]
    fn numbers_arrays_and_matchers() {
        let r = json!({"n": 5, "tags": ["a", "b"], "s": "order-42", "flag": true, "nil": null});
        assert!(matches(&json!({"n": [5.0]}), &r));
        assert!(matches(&json!({"tags": ["b"]}), &r));
        assert!(matches(&json!({"flag": [true], "nil": [null]}), &r));
        assert!(matches(&json!({"s": [{"prefix": "order-"}]}), &r));
        assert!(matches(&json!({"s": [{"suffix": "-42"}]}), &r));
        assert!(matches(
            &json!({"s": [{"equals-ignore-case": "ORDER-42"}]}),
            &r
        ));
        assert!(!matches(&json!({"s": [{"prefix": "pay-"}]}), &r));
        assert!(matches(&json!({"s": [{"anything-but": ["x", "y"]}]}), &r));
        assert!(!matches(&json!({"s": [{"anything-but": "order-42"}]}), &r));
        assert!(!matches(
            &json!({"s": [{"anything-but": {"prefix": "order"}}]}),
            &r
        ));
        assert!(matches(&json!({"n": [{"numeric": [">", 1, "<=", 5]}]}), &r));
        assert!(!matches(&json!({"n": [{"numeric": ["<", 5]}]}), &r));
        assert!(matches(
            &json!({"missing": [{"exists": false}], "n": [{"exists": true}]}),
            &r
        ));
        assert!(!matches(&json!({"n": [{"exists": false}]}), &r));
        assert!(!matches(&json!(["not", "an", "object"]), &r));
    }
}
