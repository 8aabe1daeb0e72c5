//! The AWS managed policies SAM attaches to the functions' roles, pinned in `managed/` (see
//! its README for the source and the date copied): the local stack evaluates a function's
//! calls against everything its role holds in AWS.

use serde_json::Value;

/// The pinned documents, by the last part of their ARN.
const MANAGED: &[(&str, &str)] = &[
    (
        "AWSLambdaBasicExecutionRole",
        include_str!("../managed/AWSLambdaBasicExecutionRole.json"),
    ),
    (
        "AWSLambdaDynamoDBExecutionRole",
        include_str!("../managed/AWSLambdaDynamoDBExecutionRole.json"),
    ),
    (
        "AWSLambdaSQSQueueExecutionRole",
        include_str!("../managed/AWSLambdaSQSQueueExecutionRole.json"),
    ),
    (
        "AWSXrayWriteOnlyAccess",
        include_str!("../managed/AWSXrayWriteOnlyAccess.json"),
    ),
];

/// The document of the managed policy `arn` (`arn:aws:iam::aws:policy/[path/]NAME`), when
/// pinned.
pub fn document(arn: &str) -> Option<Value> {
    let name = arn.rsplit('/').next()?;
    let (_, text) = MANAGED.iter().find(|(n, _)| *n == name)?;
    serde_json::from_str(text).ok()
}

/// The names of the pinned policies.
pub fn names() -> impl Iterator<Item = &'static str> {
    MANAGED.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Statement;

    #[test]
    fn every_pinned_policy_parses() {
        for name in names() {
            let doc =
                document(&format!("arn:aws:iam::aws:policy/service-role/{name}")).expect("json");
            assert!(
                !Statement::parse_policy(name, &doc)
                    .expect("valid")
                    .is_empty()
            );
        }
        assert!(document("arn:aws:iam::aws:policy/AmazonS3FullAccess").is_none());
    }
}
