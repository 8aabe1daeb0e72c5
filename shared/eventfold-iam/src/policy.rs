//! Identity-based policy evaluation, as IAM documents it: an explicit `Deny` wins, then an
//! `Allow`, else the request is implicitly denied; `Action`/`NotAction` and
//! `Resource`/`NotResource` with the wildcards `*` and `?` (actions case-insensitive,
//! resources case-sensitive).
//!
//! The matching itself is `iam-rs`'s; this module is the only place that names it, so it
//! could be replaced. A role's statements are kept one by one ([`Statement`]) so a caller can
//! tell which statements allow a call and evaluate the role without one of them.

use iam_rs::{Arn, Decision as IamDecision, IAMPolicy, IAMRequest, PolicyEvaluator};
use serde_json::Value;

/// The outcome of evaluating a request against a set of statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// At least one statement allows it and none denies it.
    Allow,
    /// A statement denies it explicitly.
    ExplicitDeny,
    /// No statement allows it.
    ImplicitDeny,
}

impl Decision {
    /// Whether the request may go on.
    pub fn allowed(self) -> bool {
        self == Self::Allow
    }
}

/// Why a policy document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The document is not an IAM policy.
    #[error("policy {name} is not a valid IAM policy: {source}")]
    Invalid {
        /// Where it came from (role and policy name, managed policy ARN).
        name: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// One statement of a role's policies, with where it came from.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The policy holding it (inline policy name or managed policy ARN).
    pub policy: String,
    /// Its `Sid`, or its position (`#n`) in the policy.
    pub sid: String,
    /// The statement as written (resources resolved), for reports.
    pub document: Value,
    evaluator: PolicyEvaluator,
}

impl Statement {
    /// The statements of the policy document `document` (JSON), named `policy`.
    pub fn parse_policy(policy: &str, document: &Value) -> Result<Vec<Self>, PolicyError> {
        let invalid = |source| PolicyError::Invalid {
            name: policy.to_owned(),
            source,
        };
        // IAM reads a document without `Version` as the 2008-10-17 language (SAM writes
        // some so, e.g. an event source's on-failure destination policy).
        let version = document
            .get("Version")
            .cloned()
            .unwrap_or_else(|| "2008-10-17".into());
        let mut whole = document.clone();
        whole["Version"] = version.clone();
        // Parsed whole first, so a malformed document is refused as a whole.
        serde_json::from_value::<IAMPolicy>(whole).map_err(invalid)?;
        let statements = match &document["Statement"] {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        statements
            .into_iter()
            .enumerate()
            .map(|(n, statement)| {
                let single = serde_json::json!({
                    "Version": version,
                    "Statement": [statement.clone()],
                });
                let parsed: IAMPolicy = serde_json::from_value(single).map_err(invalid)?;
                Ok(Self {
                    policy: policy.to_owned(),
                    sid: statement
                        .get("Sid")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("#{n}"), str::to_owned),
                    document: statement,
                    evaluator: PolicyEvaluator::with_policies(vec![parsed]),
                })
            })
            .collect()
    }

    /// This statement's own verdict on `action` on `resource`: `Allow` or `ExplicitDeny` when
    /// it applies, `ImplicitDeny` when it does not.
    pub fn decide(&self, principal: &str, action: &str, resource: &str) -> Decision {
        let Some(request) = request(principal, action, resource) else {
            return Decision::ImplicitDeny;
        };
        match self.evaluator.evaluate(&request).map(|r| r.decision) {
            Ok(IamDecision::Allow) => Decision::Allow,
            Ok(IamDecision::Deny) => Decision::ExplicitDeny,
            // An error (e.g. an unparsable resource pattern) applies nothing.
            Ok(IamDecision::NotApplicable) | Err(_) => Decision::ImplicitDeny,
        }
    }

    /// The short name reports use: `policy/sid`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.policy, self.sid)
    }
}

/// The request `iam-rs` evaluates. A resource of `*` (actions with no resource type, such as
/// `sqs:ListQueues`) becomes the service's any-resource ARN, which only `*`-like patterns
/// match.
fn request(principal: &str, action: &str, resource: &str) -> Option<IAMRequest> {
    let arn = if resource == "*" {
        let service = action.split(':').next().unwrap_or("*");
        Arn::parse(&format!("arn:aws:{service}:*:*:*")).ok()?
    } else {
        Arn::parse(resource).ok()?
    };
    Some(IAMRequest::new(
        iam_rs::Principal::Aws(iam_rs::PrincipalId::String(principal.to_owned())),
        action,
        arn,
    ))
}

/// IAM's combination of statement verdicts: any explicit deny wins, then any allow.
pub fn evaluate<'a>(
    statements: impl IntoIterator<Item = &'a Statement>,
    principal: &str,
    action: &str,
    resource: &str,
) -> Decision {
    let mut allowed = false;
    for statement in statements {
        match statement.decide(principal, action, resource) {
            Decision::ExplicitDeny => return Decision::ExplicitDeny,
            Decision::Allow => allowed = true,
            Decision::ImplicitDeny => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROLE: &str = "arn:aws:sts::123456789012:assumed-role/r/f";
    const TABLE: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/st-Things";

    fn statements(doc: Value) -> Vec<Statement> {
        Statement::parse_policy("p", &doc).expect("valid")
    }

    fn decide(doc: Value, action: &str, resource: &str) -> Decision {
        evaluate(&statements(doc), ROLE, action, resource)
    }

    fn allow(action: Value, resource: Value) -> Value {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]})
    }

    #[test]
    fn an_allow_allows_only_its_actions_on_its_resources() {
        let doc = allow(json!(["dynamodb:GetItem", "dynamodb:Query"]), json!(TABLE));
        assert_eq!(
            decide(doc.clone(), "dynamodb:GetItem", TABLE),
            Decision::Allow
        );
        // Implicit deny: another action, another table.
        assert_eq!(
            decide(doc.clone(), "dynamodb:BatchGetItem", TABLE),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(doc.clone(), "dynamodb:GetItem", &format!("{TABLE}2")),
            Decision::ImplicitDeny
        );
        // The table's ARN does not cover its indexes.
        assert_eq!(
            decide(doc, "dynamodb:Query", &format!("{TABLE}/index/gsi1")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn actions_are_case_insensitive_resources_are_not() {
        let doc = allow(json!("DynamoDB:getitem"), json!(TABLE));
        assert_eq!(
            decide(doc.clone(), "dynamodb:GetItem", TABLE),
            Decision::Allow
        );
        assert_eq!(
            decide(doc, "dynamodb:GetItem", &TABLE.to_uppercase()),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn an_explicit_deny_wins_over_any_allow() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": TABLE},
        ]});
        assert_eq!(
            decide(doc.clone(), "dynamodb:DeleteItem", TABLE),
            Decision::ExplicitDeny
        );
        assert_eq!(decide(doc, "dynamodb:PutItem", TABLE), Decision::Allow);
    }

    #[test]
    fn wildcards_star_and_question_mark() {
        let doc = allow(
            json!("dynamodb:Get*"),
            json!(["arn:aws:dynamodb:*:123456789012:table/st-Thing?/index/*"]),
        );
        let index = format!("{TABLE}/index/gsi1");
        assert_eq!(
            decide(doc.clone(), "dynamodb:GetItem", &index),
            Decision::Allow
        );
        assert_eq!(
            decide(doc.clone(), "dynamodb:GetRecords", &index),
            Decision::Allow
        );
        assert_eq!(
            decide(doc.clone(), "dynamodb:Query", &index),
            Decision::ImplicitDeny
        );
        // `?` is exactly one character.
        let other = "arn:aws:dynamodb:us-east-1:123456789012:table/st-Thingss/index/gsi1";
        assert_eq!(
            decide(doc.clone(), "dynamodb:GetItem", other),
            Decision::ImplicitDeny
        );
        // The index pattern does not cover the table itself.
        assert_eq!(
            decide(doc, "dynamodb:GetItem", TABLE),
            Decision::ImplicitDeny
        );
        let stream = allow(
            json!("dynamodb:GetRecords"),
            json!(format!("{TABLE}/stream/*")),
        );
        assert_eq!(
            decide(
                stream,
                "dynamodb:GetRecords",
                &format!("{TABLE}/stream/2026-01-01T00:00:00.000")
            ),
            Decision::Allow
        );
    }

    #[test]
    fn not_action_and_not_resource_invert_the_match() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "NotAction": "dynamodb:DeleteItem", "Resource": TABLE},
        ]});
        assert_eq!(
            decide(doc.clone(), "dynamodb:PutItem", TABLE),
            Decision::Allow
        );
        assert_eq!(
            decide(doc, "dynamodb:DeleteItem", TABLE),
            Decision::ImplicitDeny
        );
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sqs:SendMessage", "NotResource": "arn:aws:sqs:us-east-1:123456789012:private"},
        ]});
        let public = "arn:aws:sqs:us-east-1:123456789012:public";
        assert_eq!(
            decide(doc.clone(), "sqs:SendMessage", public),
            Decision::Allow
        );
        assert_eq!(
            decide(
                doc.clone(),
                "sqs:SendMessage",
                "arn:aws:sqs:us-east-1:123456789012:private"
            ),
            Decision::ImplicitDeny
        );
        // A Deny with NotResource denies everything but the listed resources.
        let fence = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "sqs:*", "NotResource": public},
        ]});
        assert_eq!(
            decide(fence.clone(), "sqs:SendMessage", public),
            Decision::Allow
        );
        assert_eq!(
            decide(
                fence,
                "sqs:SendMessage",
                "arn:aws:sqs:us-east-1:123456789012:other"
            ),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn resourceless_actions_need_a_star() {
        let star = allow(json!("sqs:ListQueues"), json!("*"));
        assert_eq!(decide(star, "sqs:ListQueues", "*"), Decision::Allow);
        let scoped = allow(
            json!("sqs:ListQueues"),
            json!("arn:aws:sqs:us-east-1:123456789012:q"),
        );
        assert_eq!(
            decide(scoped, "sqs:ListQueues", "*"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn statements_keep_their_names_and_a_bad_document_is_refused() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Read", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE},
            {"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": TABLE},
        ]});
        let names: Vec<String> = statements(doc).iter().map(Statement::name).collect();
        assert_eq!(names, ["p/Read", "p/#1"]);
        let bad = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Action": "x:y", "Resource": "*"}]});
        assert!(Statement::parse_policy("bad", &bad).is_err());
    }
}
