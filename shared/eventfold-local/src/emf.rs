//! What CloudWatch accepts as an Embedded Metric Format (EMF) log line, checked the way its
//! specification states it, so tests can hold the metrics a function prints to it.
//!
//! A line is a JSON object whose `_aws` member holds `Timestamp` (milliseconds since the
//! epoch) and `CloudWatchMetrics`: directives of a `Namespace`, `Dimensions` (arrays of
//! dimension names, each naming a root member with a string value, at most 30 a set) and
//! `Metrics` (`Name`, optional `Unit` from CloudWatch's list), each metric's value at the
//! root as a number or an array of at most 100 numbers.

use serde_json::{Map, Value};

/// Units CloudWatch takes in a metric definition.
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One metric value of a valid EMF line.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// The directive's namespace.
    pub namespace: String,
    /// The metric's name.
    pub name: String,
    /// Its unit, when the definition has one.
    pub unit: Option<String>,
    /// Its values (one, or the array recorded).
    pub values: Vec<f64>,
    /// Every dimension set's names and values.
    pub dimensions: Vec<Vec<(String, String)>>,
}

/// Why a line is not what CloudWatch accepts as EMF.
#[derive(Debug, thiserror::Error)]
pub enum EmfError {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The line is JSON but breaks the rule the message states.
    #[error("{0}")]
    Invalid(String),
    /// A line among others ([`metrics_in`]) is not valid EMF.
    #[error("{source}: {line}")]
    Line {
        /// The line.
        line: String,
        /// Why it is not valid.
        source: Box<EmfError>,
    },
}

fn invalid(rule: impl Into<String>) -> EmfError {
    EmfError::Invalid(rule.into())
}

fn text<'a>(m: &'a Map<String, Value>, key: &str, ctx: &str) -> Result<&'a str, EmfError> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{ctx}: {key} is not a string")))
}

fn array<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a Vec<Value>, EmfError> {
    m.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("{key} is not an array")))
}

/// Checks `line` against the EMF specification; its metric values when valid.
pub fn parse_line(line: &str) -> Result<Vec<Datum>, EmfError> {
    let root: Value = serde_json::from_str(line).map_err(EmfError::NotJson)?;
    let root = root
        .as_object()
        .ok_or_else(|| invalid("not a JSON object"))?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no _aws object"))?;
    match aws.get("Timestamp") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {}
        other => {
            return Err(invalid(format!(
                "_aws.Timestamp is not epoch milliseconds: {other:?}"
            )));
        }
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid("_aws.CloudWatchMetrics is not a non-empty array"))?;
    let mut data = Vec::new();
    for directive in directives {
        let d = directive
            .as_object()
            .ok_or_else(|| invalid("a CloudWatchMetrics entry is not an object"))?;
        let namespace = text(d, "Namespace", "directive")?;
        if !(1..=255).contains(&namespace.len()) {
            return Err(invalid("Namespace must be 1-255 characters"));
        }
        let mut dimensions = Vec::new();
        for set in array(d, "Dimensions")? {
            let names = set
                .as_array()
                .ok_or_else(|| invalid("a dimension set is not an array"))?;
            if names.len() > 30 {
                return Err(invalid("a dimension set has more than 30 dimensions"));
            }
            let mut pairs = Vec::new();
            for name in names {
                let name = name
                    .as_str()
                    .ok_or_else(|| invalid("a dimension name is not a string"))?;
                let value = text(root, name, "dimension")?;
                pairs.push((name.to_owned(), value.to_owned()));
            }
            dimensions.push(pairs);
        }
        let metrics = array(d, "Metrics")?;
        if metrics.len() > 100 {
            return Err(invalid("a directive defines more than 100 metrics"));
        }
        for metric in metrics {
            let m = metric
                .as_object()
                .ok_or_else(|| invalid("a metric definition is not an object"))?;
            let name = text(m, "Name", "metric")?;
            if !(1..=1024).contains(&name.len()) {
                return Err(invalid("a metric Name must be 1-1024 characters"));
            }
            let unit = match m.get("Unit") {
                None => None,
                Some(Value::String(u)) if UNITS.contains(&u.as_str()) => Some(u.clone()),
                Some(other) => {
                    return Err(invalid(format!(
                        "{name}: Unit {other} is not a CloudWatch unit"
                    )));
                }
            };
            let values = match root.get(name) {
                Some(Value::Number(n)) => {
                    vec![n.as_f64().ok_or_else(|| invalid("value out of range"))?]
                }
                Some(Value::Array(a)) if !a.is_empty() && a.len() <= 100 => a
                    .iter()
                    .map(|v| {
                        v.as_f64()
                            .ok_or_else(|| invalid(format!("{name}: a value is not a number")))
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(invalid(format!(
                        "{name}: no number or array of 1-100 numbers at the root: {other:?}"
                    )));
                }
            };
            data.push(Datum {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                unit,
                values,
                dimensions: dimensions.clone(),
            });
        }
    }
    Ok(data)
}

/// The EMF lines among `lines` (those with an `_aws` member), each checked: every metric
/// they hold, or the first line that breaks the specification and why.
pub fn metrics_in(lines: &[String]) -> Result<Vec<Datum>, EmfError> {
    let mut all = Vec::new();
    for line in lines.iter().filter(|l| l.contains("\"_aws\"")) {
        all.extend(parse_line(line).map_err(|e| EmfError::Line {
            line: line.clone(),
            source: Box::new(e),
        })?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"_aws":{"Timestamp":1768473000123,"CloudWatchMetrics":[{"Namespace":"Eventfold","Dimensions":[["function","consumer"]],"Metrics":[{"Name":"consumer_lag","Unit":"Milliseconds"},{"Name":"events_consumed"}]}]},"function":"projector","consumer":"projector","consumer_lag":[12.5,3.0],"events_consumed":2}"#;

    #[test]
    fn valid_lines_give_their_metrics() {
        let data = parse_line(GOOD).expect("valid");
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].name, "consumer_lag");
        assert_eq!(data[0].values, [12.5, 3.0]);
        assert_eq!(data[0].unit.as_deref(), Some("Milliseconds"));
        assert_eq!(
            data[1].dimensions,
            [vec![
                ("function".to_owned(), "projector".to_owned()),
                ("consumer".to_owned(), "projector".to_owned())
            ]]
        );
        let lines = vec!["{\"level\":\"INFO\"}".to_owned(), GOOD.to_owned()];
        assert_eq!(metrics_in(&lines).expect("valid").len(), 2);
    }

    #[test]
    fn lines_breaking_the_specification_are_refused() {
        let bad = [
            GOOD.replace("1768473000123", "\"now\""),
            GOOD.replace(r#","consumer":"projector""#, ""),
            GOOD.replace("Milliseconds", "Millis"),
            GOOD.replace(r#","events_consumed":2"#, ""),
            GOOD.replace(r#""Namespace":"Eventfold","#, ""),
            GOOD.replace(
                r#""CloudWatchMetrics":[{"#,
                r#""CloudWatchMetrics":[],"x":[{"#,
            ),
        ];
        for line in bad {
            assert!(parse_line(&line).is_err(), "accepted: {line}");
        }
    }
}
