//! The template's `Outputs` as the local stack resolves them, registered on the emulator as a
//! real CloudFormation stack of the same name, so a tool that reads a deployed stack's outputs
//! with `DescribeStacks` (`eventfold verify`) reads the local stack's the same way.
//!
//! The registered stack holds one placeholder resource (`AWS::CloudFormation::WaitConditionHandle`,
//! which CloudFormation creates as nothing; moto skips it with a warning) and the outputs as
//! literal values: moto provisions nothing more, the resources themselves stay
//! [`crate::provision`]'s.

use crate::template::{Template, parse_yaml};
use anyhow::{Context, Result};
use aws_config::SdkConfig;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use serde_json::{Map, Value, json};
use std::path::Path;

/// One output of the stack, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its key (`ApiUrl`, `EventsTableName`, ...).
    pub key: String,
    /// Its value in this stack.
    pub value: String,
    /// Its description, when the template gives one.
    pub description: Option<String>,
}

/// The resource of the template whose execute-api URL the local gateway serves instead.
const HTTP_API: &str = "HttpApi";

/// The `Outputs` of the template file at `path`, resolved against the provisioned `template`;
/// an output that names the HTTP API (`${HttpApi}`) is the local gateway's `api_url`. An
/// output the local stack cannot resolve is an error: a registered stack missing it would
/// fail its readers later and less clearly.
pub fn resolve(path: &Path, template: &Template, api_url: &str) -> Result<Vec<Output>> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let root = parse_yaml(&raw)?;
    let Some(outputs) = root.get("Outputs").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    outputs
        .iter()
        .map(|(key, output)| {
            let spec = output.get("Value").unwrap_or(&Value::Null);
            let value = if names_http_api(spec) {
                format!("{}/", api_url.trim_end_matches('/'))
            } else {
                template
                    .resolve(spec)
                    .with_context(|| format!("output {key} does not resolve locally: {spec}"))?
            };
            Ok(Output {
                key: key.clone(),
                value,
                description: output
                    .get("Description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        })
        .collect()
}

/// Whether an output's value refers to the HTTP API resource (`!Ref HttpApi` or a `!Sub`
/// naming `${HttpApi}`): in AWS its URL, locally the gateway's.
fn names_http_api(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(&format!("${{{HTTP_API}}}")),
        Value::Array(items) => items.iter().any(names_http_api),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "Ref" && v.as_str() == Some(HTTP_API)) || names_http_api(v)),
        _ => false,
    }
}

/// The CloudFormation template body that registers `outputs`: a placeholder resource (a
/// stack needs one) and the outputs as literals.
pub fn registration_body(outputs: &[Output]) -> String {
    let mut out = Map::new();
    for o in outputs {
        let mut entry = Map::new();
        entry.insert("Value".into(), Value::String(o.value.clone()));
        if let Some(d) = &o.description {
            entry.insert("Description".into(), Value::String(d.clone()));
        }
        out.insert(o.key.clone(), Value::Object(entry));
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "eventfold local: the local stack's resolved outputs (resources are provisioned by eventfold-local)",
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": out,
    })
    .to_string()
}

/// Registers `outputs` as the CloudFormation stack `name` on the endpoint of `sdk`, replacing
/// a stack of that name left by an earlier run (a restarted `eventfold local` on a running
/// emulator gets a new API port).
pub async fn register(sdk: &SdkConfig, name: &str, outputs: &[Output]) -> Result<()> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let body = registration_body(outputs);
    let created = cfn
        .create_stack()
        .stack_name(name)
        .template_body(&body)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("AlreadyExistsException") => {
            cfn.delete_stack().stack_name(name).send().await?;
            cfn.create_stack()
                .stack_name(name)
                .template_body(&body)
                .send()
                .await
                .with_context(|| format!("registering the outputs of {name} again"))?;
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("registering the outputs of {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_api_is_recognised_in_a_sub_and_a_ref() {
        let sub =
            json!({"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"});
        assert!(names_http_api(&sub));
        assert!(names_http_api(&json!({"Ref": "HttpApi"})));
        assert!(!names_http_api(&json!({"Ref": "EventsTable"})));
        assert!(!names_http_api(
            &json!({"Fn::Sub": "${HttpApiAccessLogGroup}"})
        ));
    }

    #[test]
    fn the_registration_holds_the_outputs_as_literals() {
        let outputs = [Output {
            key: "EventsTableName".into(),
            value: "s-EventsTable".into(),
            description: Some("Name of the events table.".into()),
        }];
        let body: Value = serde_json::from_str(&registration_body(&outputs)).expect("json");
        assert_eq!(
            body["Outputs"]["EventsTableName"],
            json!({"Value": "s-EventsTable", "Description": "Name of the events table."})
        );
        assert_eq!(
            body["Resources"]["Placeholder"]["Type"],
            "AWS::CloudFormation::WaitConditionHandle"
        );
    }
}
