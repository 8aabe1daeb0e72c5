//! Template parameters overridden as `sam deploy --parameter-overrides` does: `Name=Value`
//! pairs (several per argument, separated by spaces, or one per argument) or the long form
//! `ParameterKey=Name,ParameterValue=Value`, checked against the parameter's declaration.

use super::{Template, text};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Reads `--parameter-overrides` arguments into (name, value) pairs, in order (a later pair
/// for the same name wins when applied).
pub fn parse_parameter_overrides(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for arg in args {
        for token in arg.split_whitespace() {
            if let Some(rest) = token.strip_prefix("ParameterKey=") {
                let (name, value) = rest.split_once(",ParameterValue=").ok_or_else(|| {
                    anyhow!("'{token}': expected ParameterKey=Name,ParameterValue=Value")
                })?;
                out.push((name.to_owned(), value.to_owned()));
                continue;
            }
            let (name, value) = token
                .split_once('=')
                .ok_or_else(|| anyhow!("'{token}': expected Name=Value"))?;
            if name.is_empty() {
                bail!("'{token}': the parameter name is empty");
            }
            out.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(out)
}

fn number(spec: &Value, key: &str) -> Option<f64> {
    spec.get(key).and_then(text).and_then(|t| t.parse().ok())
}

impl Template {
    /// The names of the template's parameters.
    pub fn parameter_names(&self) -> Vec<String> {
        self.root
            .get("Parameters")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The value a parameter resolves to (its override, else its default).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Overrides parameter `name` with `value`, as CloudFormation would accept it: the
    /// template must declare it, and the value must fit its `Type` (`Number`), `MinValue`,
    /// `MaxValue` and `AllowedValues`.
    pub fn override_parameter(&mut self, name: &str, value: &str) -> Result<()> {
        let spec = self
            .root
            .get("Parameters")
            .and_then(|p| p.get(name))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "the template has no parameter {name}; it has: {}",
                    self.parameter_names().join(", ")
                )
            })?;
        let check = || -> Result<()> {
            if spec.get("Type").and_then(Value::as_str) == Some("Number") {
                let n: f64 = value.parse().context("not a number")?;
                if let Some(min) = number(&spec, "MinValue")
                    && n < min
                {
                    bail!("below MinValue {min}");
                }
                if let Some(max) = number(&spec, "MaxValue")
                    && n > max
                {
                    bail!("above MaxValue {max}");
                }
            }
            if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_array) {
                let allowed: Vec<String> = allowed.iter().filter_map(text).collect();
                if !allowed.iter().any(|a| a == value) {
                    bail!("not one of {}", allowed.join(", "));
                }
            }
            Ok(())
        };
        check().with_context(|| format!("parameter {name}={value}"))?;
        self.set_parameter(name, value);
        Ok(())
    }

    /// Applies every override of `overrides`, in order.
    pub fn override_parameters(&mut self, overrides: &[(String, String)]) -> Result<()> {
        for (name, value) in overrides {
            self.override_parameter(name, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &str = r#"
Parameters:
  Timeout: { Type: Number, Default: 900, MinValue: 1, MaxValue: 3600 }
  Level: { Type: String, Default: info, AllowedValues: [info, debug] }
  Issuer: { Type: String }
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          TIMEOUT: !Ref Timeout
          LEVEL: !Ref Level
"#;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn overrides_read_in_both_sam_forms() {
        let parsed = parse_parameter_overrides(&args(&[
            "Timeout=5 Level=debug",
            "ParameterKey=Issuer,ParameterValue=https://id.example/a=b",
            "Level=info",
        ]))
        .expect("parses");
        assert_eq!(
            parsed,
            [
                ("Timeout".into(), "5".into()),
                ("Level".into(), "debug".into()),
                ("Issuer".into(), "https://id.example/a=b".into()),
                ("Level".into(), "info".into()),
            ]
        );
        for bad in ["Timeout", "=5", "ParameterKey=Timeout"] {
            assert!(parse_parameter_overrides(&args(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides_reach_the_environment_and_are_checked() {
        let mut t = Template::parse(PARAMS, "st", "us-east-1").expect("parses");
        assert_eq!(t.functions()[0].environment["TIMEOUT"], "900");
        t.override_parameters(&[
            ("Timeout".into(), "5".into()),
            ("Level".into(), "debug".into()),
        ])
        .expect("valid overrides");
        let env = &t.functions()[0].environment;
        assert_eq!(
            (env["TIMEOUT"].as_str(), env["LEVEL"].as_str()),
            ("5", "debug")
        );
        assert_eq!(t.parameter("Timeout"), Some("5"));
        t.override_parameter("Issuer", "https://id.example/")
            .expect("no default needed");
        for (name, value, why) in [
            ("Nope", "1", "no parameter Nope"),
            ("Timeout", "soon", "not a number"),
            ("Timeout", "0", "below MinValue"),
            ("Timeout", "4000", "above MaxValue"),
            ("Level", "trace", "not one of info, debug"),
        ] {
            let err = t.override_parameter(name, value).expect_err("refused");
            assert!(format!("{err:#}").contains(why), "{name}={value}: {err:#}");
        }
        assert_eq!(
            t.parameter("Timeout"),
            Some("5"),
            "a refused override changes nothing"
        );
    }
}
