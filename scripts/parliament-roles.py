"""Lints every role policy of the SAM-translated template with parliament (IAM linter).

Usage: parliament-roles.py TRANSLATED_TEMPLATE   (run with .venv-security's Python)

Each inline policy of each `AWS::IAM::Role`, and each `AWS::IAM::Policy` (as a policy of
every role it names) is checked on its own, after its intrinsics are replaced with plausible
ARNs of this stack (account 123456789012, us-east-1, stack `eventfold`): parliament matches each action's resource types against the ARNs, so a table
ARN must look like a table ARN. All severities count, with the community auditors. Exits 1
on any finding not in ALLOWED below, and on an ALLOWED entry that matches nothing (a fixed
finding takes its explanation with it). The template gives every function an explicit role, so
SAM attaches no managed policy; one that appears (a role left to SAM) is AWS's own document
and is not linted here.
"""

import json
import re
import sys
import warnings

import yaml

# parliament 1.6.4 imports pkg_resources, which warns about its own deprecation.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
import parliament  # noqa: E402

# Findings that stay, each with the reason. An entry matches a finding by role, policy,
# parliament issue code, and `detail`: a regex the finding's whole detail must match.
_STREAM_READS = (
    r"\[(\{'action': 'dynamodb:(DescribeStream|GetRecords|GetShardIterator)', "
    r"'required_format': 'arn:\*:dynamodb:\*:\*:table/\*/stream/\*'\}(, )?)+\]"
)
_STREAM_REASON = (
    "false positive: parliament 1.6.4 refuses a ':' in a resource id whose documented format has none, and "
    "a stream ARN's label is a timestamp (.../stream/2025-01-01T00:00:00.000); with a colon-free label the "
    "same statement passes"
)
ALLOWED: list[dict] = [
    {
        "role": "StreamPublisherFunctionRole",
        "policy": "StreamPublisherFunctionRolePolicy0",
        "issue": "RESOURCE_MISMATCH",
        "detail": _STREAM_READS,
        "reason": _STREAM_REASON,
    },
    {
        "role": "DlqProcessorFunctionRole",
        "policy": "DlqProcessorFunctionRolePolicy0",
        "issue": "RESOURCE_MISMATCH",
        "detail": _STREAM_READS,
        "reason": _STREAM_REASON,
    },
]

ACCOUNT, REGION, STACK = "123456789012", "us-east-1", "eventfold"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com",
}


class Resolver:
    """Ref / GetAtt / Sub / Join of the template -> strings, per resource type."""

    def __init__(self, template):
        self.resources = template["Resources"]
        self.parameters = template.get("Parameters", {})

    def physical_name(self, logical):
        res = self.resources[logical]
        props = res.get("Properties", {})
        for key in ("TopicName", "QueueName", "TableName", "FunctionName"):
            if key in props:
                return self.resolve(props[key])
        # CloudFormation's generated name: {stack}-{LogicalId}-{suffix}.
        return f"{STACK}-{logical}-1A2B3C4D5E6F"

    def ref(self, name):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return str(self.parameters[name].get("Default", f"param-{name}"))
        kind = self.resources[name]["Type"]
        physical = self.physical_name(name)
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{physical}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"
        if kind in ("AWS::DynamoDB::Table", "AWS::Lambda::Function", "AWS::IAM::Role", "AWS::Logs::LogGroup"):
            return physical
        raise SystemExit(f"parliament-roles: no plausible value for !Ref {name} ({kind}): teach Resolver.ref")

    def get_att(self, logical, attribute):
        kind = self.resources[logical]["Type"]
        physical = self.physical_name(logical)
        arns = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{physical}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{physical}",
            "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{physical}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{physical}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}:*",
            # A key's id is a UUID KMS picks; any one stands for it here.
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if kind == "AWS::DynamoDB::Table" and attribute == "StreamArn":
            return f"{arns[kind]}/stream/2025-01-01T00:00:00.000"
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return physical
        if kind == "AWS::SNS::Topic" and attribute == "TopicName":
            return physical
        raise SystemExit(
            f"parliament-roles: no plausible value for !GetAtt {logical}.{attribute} ({kind}): teach Resolver.get_att"
        )

    def resolve(self, value):
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

                def sub(match):
                    name = match.group(1)
                    if name in local:
                        return self.resolve(local[name])
                    if "." in name and name.split(".", 1)[0] in self.resources:
                        return self.get_att(*name.split(".", 1))
                    return self.ref(name)

                return re.sub(r"\$\{([^}!]+)\}", sub, text)
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(self.resolve(p) for p in parts)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        template = yaml.safe_load(f)
    resolver = Resolver(template)
    findings, checked = [], 0
    policies = []
    for logical, res in sorted(template["Resources"].items()):
        if res["Type"] == "AWS::IAM::Role":
            policies += [(logical, policy) for policy in res["Properties"].get("Policies", [])]
        elif res["Type"] == "AWS::IAM::Policy":
            for role in res["Properties"].get("Roles", []):
                if not (isinstance(role, dict) and set(role) == {"Ref"}):
                    raise SystemExit(f"parliament-roles: {logical} names a role that is not a !Ref: {role}")
                policies.append((role["Ref"], res["Properties"]))
    for role, policy in policies:
        document = resolver.resolve(policy["PolicyDocument"])
        analyzed = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
        checked += 1
        for finding in analyzed.findings:
            parliament.enhance_finding(finding)
            findings.append((role, policy["PolicyName"], finding))

    used, unexplained = set(), []
    for role, policy, finding in findings:
        detail = str(finding.detail)
        for i, allowed in enumerate(ALLOWED):
            if (
                allowed["role"] == role
                and allowed["policy"] == policy
                and allowed["issue"] == finding.issue
                and re.fullmatch(allowed["detail"], detail)
            ):
                used.add(i)
                print(f"parliament-roles: allowed: {finding.issue} in {role}/{policy}: {allowed['reason']}")
                break
        else:
            unexplained.append((role, policy, finding, detail))

    for role, policy, finding, detail in unexplained:
        print(
            f"parliament-roles: {finding.severity} {finding.issue} in {role}/{policy}: {finding.title}: "
            f"{detail} {json.dumps(finding.location, default=str)}"
        )
    stale = [a for i, a in enumerate(ALLOWED) if i not in used]
    for allowed in stale:
        print(
            f"parliament-roles: allow-list entry matches no finding (remove it): "
            f"{allowed['issue']} in {allowed['role']}/{allowed['policy']}"
        )
    if unexplained or stale:
        sys.exit(1)
    print(
        f"parliament-roles: {checked} role policies, {len(findings)} finding(s), "
        f"all explained ({len(used)} allow-list entr{'y' if len(used) == 1 else 'ies'})"
    )


if __name__ == "__main__":
    main()
