//! Each function's role as AWS would hold it: the template translated to CloudFormation by
//! SAM itself (`scripts/sam-translate.py`, offline: the role SAM generates per function, its
//! inline `Policies` with the SAM policy templates expanded, and its `ManagedPolicyArns`;
//! or the template's own `AWS::IAM::Role` that a function names with `Role: !GetAtt X.Arn`,
//! with the `AWS::IAM::Policy` resources attached to it),
//! the intrinsics resolved to this stack's ARNs by the local [`Template`], and the managed
//! policies' documents pinned in `eventfold-iam` (`shared/eventfold-iam/managed/`).

use crate::template::{LOCAL_ACCOUNT, Template, parse_yaml};
use anyhow::{Context, Result, anyhow, bail};
use eventfold_iam::policy::{PolicyError, Statement};
use eventfold_iam::{Role, managed};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Translates the SAM template at `template` with the project's `.venv` (cached by the
/// template's and the tools' content: on disk under `.venv/eventfold-cache/` and in memory).
pub fn translate(root: &Path, template: &Path) -> Result<Arc<Value>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Value>>>> = OnceLock::new();
    let text =
        std::fs::read(template).with_context(|| format!("reading {}", template.display()))?;
    let mut hash = Sha256::new();
    hash.update(&text);
    hash.update(std::fs::read(root.join("scripts/requirements.txt")).unwrap_or_default());
    hash.update(std::fs::read(root.join("scripts/sam-translate.py")).unwrap_or_default());
    let key: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let cache = CACHE.get_or_init(Mutex::default);
    // Held across the translation: concurrent stacks of one process translate once.
    let mut cache = cache
        .lock()
        .map_err(|_| anyhow!("translation cache poisoned"))?;
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let dir = root.join(".venv/eventfold-cache");
    let file = dir.join(format!("sam-translate-{key}.yaml"));
    let yaml = match std::fs::read_to_string(&file) {
        Ok(y) => y,
        Err(_) => {
            let yaml = run_translator(root, template)?;
            std::fs::create_dir_all(&dir).ok();
            let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
            if std::fs::write(&tmp, &yaml).is_ok() {
                std::fs::rename(&tmp, &file).ok();
            }
            yaml
        }
    };
    let value = Arc::new(parse_yaml(&yaml).context("the SAM translation is not YAML")?);
    cache.insert(key, value.clone());
    Ok(value)
}

fn run_translator(root: &Path, template: &Path) -> Result<String> {
    let python = std::env::var_os("EVENTFOLD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if !python.exists() {
        bail!(
            "IAM enforcement translates the template with SAM, which needs {} with aws-sam-cli: run ./scripts/setup (or turn IAM off with --no-iam)",
            python.display()
        );
    }
    let out = std::env::temp_dir().join(format!(
        "eventfold-sam-{}-{}.yaml",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("scripts/sam-translate.py"))
        .arg(template)
        .arg(&out);
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        cmd.env("AWS_DEFAULT_REGION", "us-east-1");
    }
    let status = cmd.output().context("running scripts/sam-translate.py")?;
    if !status.status.success() {
        bail!(
            "scripts/sam-translate.py failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    let yaml = std::fs::read_to_string(&out).context("reading the SAM translation")?;
    std::fs::remove_file(&out).ok();
    Ok(yaml)
}

/// Replaces every intrinsic in `v` with its value in `template`; an error names what the
/// local stack cannot resolve.
fn resolve_all(template: &Template, v: &Value) -> Result<Value> {
    Ok(match v {
        Value::Object(o)
            if o.len() == 1 && o.keys().all(|k| k == "Ref" || k.starts_with("Fn::")) =>
        {
            Value::String(
                template
                    .resolve(v)
                    .ok_or_else(|| anyhow!("cannot resolve {v}"))?,
            )
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), resolve_all(template, v)?)))
                .collect::<Result<_>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve_all(template, i))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Each function's role, by function logical id, from `translated` resolved in `template`
/// (provisioned: stream ARNs known). A managed policy that is not pinned is an error.
pub fn function_roles(template: &Template, translated: &Value) -> Result<BTreeMap<String, Role>> {
    let resources = translated
        .get("Resources")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("the translation has no Resources"))?;
    let mut out = BTreeMap::new();
    for (id, r) in resources {
        if r.get("Type").and_then(Value::as_str) != Some("AWS::Lambda::Function") {
            continue;
        }
        let role = r
            .get("Properties")
            .and_then(|p| p.get("Role"))
            .and_then(|role| role.get("Fn::GetAtt"))
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("function {id} has no role of the template"))?;
        let props = resources
            .get(role)
            .and_then(|r| r.get("Properties"))
            .ok_or_else(|| anyhow!("role {role} of {id} is not in the translation"))?;
        let mut statements = Vec::new();
        for policy in props
            .get("Policies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = policy
                .get("PolicyName")
                .and_then(Value::as_str)
                .unwrap_or(role);
            let document = resolve_all(
                template,
                policy.get("PolicyDocument").unwrap_or(&Value::Null),
            )
            .with_context(|| format!("policy {name} of {role}"))?;
            statements.extend(
                Statement::parse_policy(name, &document).map_err(|e: PolicyError| anyhow!(e))?,
            );
        }
        // Policies of their own (`AWS::IAM::Policy`) attached to the role: the template's
        // logs statements, which reference the function's log group (named after the
        // function, which needs the role: inside the role they would make a cycle).
        for (policy_id, policy) in resources {
            if policy.get("Type").and_then(Value::as_str) != Some("AWS::IAM::Policy") {
                continue;
            }
            let p = policy.get("Properties");
            let attached = p
                .and_then(|p| p.get("Roles"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| r.get("Ref").and_then(Value::as_str) == Some(role));
            if !attached {
                continue;
            }
            let name = p
                .and_then(|p| p.get("PolicyName"))
                .and_then(Value::as_str)
                .unwrap_or(policy_id);
            let document = resolve_all(
                template,
                p.and_then(|p| p.get("PolicyDocument"))
                    .unwrap_or(&Value::Null),
            )
            .with_context(|| format!("policy {policy_id} of {role}"))?;
            statements.extend(
                Statement::parse_policy(name, &document).map_err(|e: PolicyError| anyhow!(e))?,
            );
        }
        for arn in props
            .get("ManagedPolicyArns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let arn = template
                .resolve(arn)
                .ok_or_else(|| anyhow!("cannot resolve a managed policy ARN of {role}: {arn}"))?;
            let document = managed::document(&arn).ok_or_else(|| {
                anyhow!("{role} holds the managed policy {arn}, not pinned in shared/eventfold-iam/managed/")
            })?;
            let name = arn.rsplit('/').next().unwrap_or(&arn).to_owned();
            statements.extend(Statement::parse_policy(&name, &document)?);
        }
        let principal = format!(
            "arn:aws:sts::{LOCAL_ACCOUNT}:assumed-role/{}/{}",
            template.physical_name(role),
            template.physical_name(id)
        );
        out.insert(
            id.clone(),
            Role {
                function: id.clone(),
                role: role.to_owned(),
                principal,
                statements,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_iam::{Decision, evaluate};

    const SAM: &str = r#"
Resources:
  Things:
    Type: AWS::DynamoDB::Table
  Work:
    Type: AWS::SQS::Queue
    Properties: { QueueName: !Sub "${AWS::StackName}-work.fifo", FifoQueue: true }
  Own:
    Type: AWS::Serverless::Function
  OwnLogGroup:
    Type: AWS::Logs::LogGroup
    Properties: { LogGroupName: !Sub "/aws/lambda/${Own}" }
"#;

    const TRANSLATED: &str = r#"
Resources:
  WorkerFunction:
    Type: AWS::Lambda::Function
    Properties:
      Role: { "Fn::GetAtt": [WorkerRole, Arn] }
  WorkerRole:
    Type: AWS::IAM::Role
    Properties:
      ManagedPolicyArns:
        - arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole
        - { "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess" }
      Policies:
        - PolicyName: WorkerRolePolicy0
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Sid: Read
                Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:Query]
                Resource:
                  - { "Fn::GetAtt": [Things, Arn] }
                  - { "Fn::Sub": "${Things.Arn}/index/*" }
              - Sid: Consume
                Effect: Allow
                Action: sqs:ReceiveMessage
                Resource: { "Fn::GetAtt": [Work, Arn] }
  Own:
    Type: AWS::Lambda::Function
    Properties:
      Role: { "Fn::GetAtt": [OwnRole, Arn] }
  OwnRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: OwnRolePolicy0
          PolicyDocument:
            Statement:
              - Sid: Consume
                Effect: Allow
                Action: sqs:ReceiveMessage
                Resource: { "Fn::GetAtt": [Work, Arn] }
  OwnLogsPolicy:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: OwnLogs
      Roles: [{ Ref: OwnRole }]
      PolicyDocument:
        Statement:
          - Sid: WriteOwnLogs
            Effect: Allow
            Action: [logs:CreateLogStream, logs:PutLogEvents]
            Resource: { "Fn::GetAtt": [OwnLogGroup, Arn] }
  OtherLogsPolicy:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: OtherLogs
      Roles: [{ Ref: ElseRole }]
      PolicyDocument:
        Statement:
          - Sid: Nothing
            Effect: Allow
            Action: sqs:DeleteMessage
            Resource: { "Fn::GetAtt": [Work, Arn] }
"#;

    #[test]
    fn roles_resolve_to_the_stacks_arns_with_their_managed_policies() {
        let template = Template::parse(SAM, "st", "us-east-1").expect("parses");
        let translated = parse_yaml(TRANSLATED).expect("yaml");
        let roles = function_roles(&template, &translated).expect("resolves");
        let role = &roles["WorkerFunction"];
        assert_eq!(
            role.principal,
            "arn:aws:sts::123456789012:assumed-role/st-WorkerRole/st-WorkerFunction"
        );
        let names: Vec<String> = role.statements.iter().map(Statement::name).collect();
        assert_eq!(
            names,
            [
                "WorkerRolePolicy0/Read",
                "WorkerRolePolicy0/Consume",
                "AWSLambdaBasicExecutionRole/#0",
                "AWSXrayWriteOnlyAccess/AWSXrayWriteOnlyAccess"
            ]
        );
        let decide = |action: &str, resource: &str| {
            evaluate(&role.statements, &role.principal, action, resource)
        };
        let table = "arn:aws:dynamodb:us-east-1:123456789012:table/st-Things";
        assert_eq!(
            decide("dynamodb:Query", &format!("{table}/index/gsi1")),
            Decision::Allow
        );
        assert_eq!(
            decide("dynamodb:BatchGetItem", table),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                "sqs:ReceiveMessage",
                "arn:aws:sqs:us-east-1:123456789012:st-work.fifo"
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                "logs:PutLogEvents",
                "arn:aws:logs:us-east-1:123456789012:log-group:x"
            ),
            Decision::Allow
        );
    }

    #[test]
    fn an_explicit_role_holds_its_inline_and_attached_policies_only() {
        let template = Template::parse(SAM, "st", "us-east-1").expect("parses");
        let translated = parse_yaml(TRANSLATED).expect("yaml");
        let roles = function_roles(&template, &translated).expect("resolves");
        let role = &roles["Own"];
        assert_eq!(role.role, "OwnRole");
        let names: Vec<String> = role.statements.iter().map(Statement::name).collect();
        assert_eq!(names, ["OwnRolePolicy0/Consume", "OwnLogs/WriteOwnLogs"]);
        let decide = |action: &str, resource: &str| {
            evaluate(&role.statements, &role.principal, action, resource)
        };
        let group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/st-Own";
        assert_eq!(
            decide(
                "logs:PutLogEvents",
                &format!("{group}:log-stream:2026/01/01/x")
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                "logs:PutLogEvents",
                "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/st-Other:log-stream:x"
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn an_unpinned_managed_policy_is_refused() {
        let template = Template::parse(SAM, "st", "us-east-1").expect("parses");
        let translated =
            parse_yaml(&TRANSLATED.replace("AWSXrayWriteOnlyAccess", "AmazonS3FullAccess"))
                .expect("yaml");
        let err = function_roles(&template, &translated).expect_err("unpinned");
        assert!(err.to_string().contains("AmazonS3FullAccess"), "{err}");
    }
}
