//! What a function is given when it runs alone: its environment as the local stack resolves
//! it, the provisioned stack it runs against, and its sample events.

use crate::template::{FunctionSpec, Template};
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;

/// The template function `name` (its binary or logical id); an error naming the known ones.
pub(super) fn function(template: &Template, name: &str) -> Result<FunctionSpec> {
    template.function(name).ok_or_else(|| {
        let known: Vec<String> = template.functions().into_iter().map(|f| f.binary).collect();
        anyhow!(
            "the template has no function '{name}'; known: {}",
            known.join(", ")
        )
    })
}

/// The environment of the function `name` (its binary, e.g. `projector`, or its logical id)
/// against a local stack whose template is `template` and whose AWS endpoint is `endpoint`:
/// every variable of its template environment as the stack resolves it, then
/// `AWS_ENDPOINT_URL`, `AWS_REGION` and, unless the process has credentials of its own,
/// moto's dummy ones. Sorted by name.
pub fn standalone_env(
    template: &Template,
    name: &str,
    endpoint: &str,
    region: &str,
) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> =
        function(template, name)?.environment.into_iter().collect();
    env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_owned()));
    env.push(("AWS_REGION".into(), region.to_owned()));
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        env.push(("AWS_ACCESS_KEY_ID".into(), "test".into()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "test".into()));
    }
    env.sort();
    Ok(env)
}

/// `KEY=value` lines, as `cargo lambda watch --env-file` and `env $(...)` read them.
pub fn env_file(env: &[(String, String)]) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// The template's resources on an emulator of their own, with no in-process handler and no
/// event-source poller: the stack a function runs against as a process
/// ([`FunctionProcess`](super::FunctionProcess)), consuming nothing behind its back. `root`
/// is the repository root.
pub async fn provisioned_stack(root: &Path) -> Result<crate::LocalStack> {
    provisioned_stack_at(root, None).await
}

/// [`provisioned_stack`] on the emulator already serving at `endpoint` (`None`: one of its
/// own).
pub async fn provisioned_stack_at(
    root: &Path,
    endpoint: Option<String>,
) -> Result<crate::LocalStack> {
    let options = crate::LocalOptions {
        root: root.to_path_buf(),
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        emulator_port: 0,
        endpoint,
        stack: "eventfold-local".to_owned(),
        auth: crate::JwtConfig::dev(),
        parameter_overrides: Vec::new(),
        iam: true,
        iam_port: 0,
    };
    let esm = crate::EsmOptions {
        enabled: false,
        ..crate::EsmOptions::default()
    };
    crate::LocalStack::start(options, &crate::Functions::new(), esm).await
}

/// A function's sample event: `events/{name}.json` of the crate whose manifest directory is
/// `manifest_dir` (a test's `env!("CARGO_MANIFEST_DIR")`).
pub fn sample_event(manifest_dir: &Path, name: &str) -> Result<Value> {
    let path = manifest_dir.join("events").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The X-Ray trace header API Gateway put on an HTTP API request event, if any.
pub fn request_trace(event: &Value) -> Option<&str> {
    event["headers"]["x-amzn-trace-id"].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Level:
    Type: String
    Default: info
Globals:
  Function:
    Environment:
      Variables:
        RUST_LOG: !Ref Level
Resources:
  Things:
    Type: AWS::DynamoDB::Table
  WorkerFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: worker
    Properties:
      Environment:
        Variables:
          THINGS_TABLE: !Ref Things
"#;

    #[test]
    fn a_function_env_is_the_template_env_plus_the_endpoint() {
        let template = Template::parse(TEMPLATE, "eventfold-local", "us-east-1").expect("parses");
        let env = standalone_env(&template, "worker", "http://127.0.0.1:4566", "us-east-1")
            .expect("known");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("THINGS_TABLE"), Some("eventfold-local-Things"));
        assert_eq!(get("RUST_LOG"), Some("info"));
        assert_eq!(get("AWS_ENDPOINT_URL"), Some("http://127.0.0.1:4566"));
        assert_eq!(get("AWS_REGION"), Some("us-east-1"));
        let by_id = standalone_env(&template, "WorkerFunction", "e", "r").expect("known");
        assert_eq!(
            by_id.len(),
            standalone_env(&template, "worker", "e", "r")
                .expect("k")
                .len()
        );
        let text = env_file(&env);
        assert!(
            text.contains("THINGS_TABLE=eventfold-local-Things\n"),
            "{text}"
        );
        let err = standalone_env(&template, "nope", "e", "r").expect_err("unknown");
        assert!(err.to_string().contains("known: worker"), "{err}");
    }
}
