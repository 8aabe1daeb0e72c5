"""CKV_EVENTFOLD_1: every SQS queue is encrypted at rest, by SSE-SQS or by SSE-KMS.

Replaces checkov's CKV_AWS_27 (scripts/lint-infra skips it): for CloudFormation that check
reads `KmsMasterKeyId` only, so a queue with `SqsManagedSseEnabled: true` fails it. SSE-KMS
with the AWS managed key (alias/aws/sqs) is no way out: SNS cannot use that key, so the
subscribed queues would stop receiving; a customer managed key would cost a key and its policy
for every producer.
"""

from checkov.cloudformation.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class SqsQueueEncrypted(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure SQS queues are encrypted at rest (SqsManagedSseEnabled or KmsMasterKeyId)",
            id="CKV_EVENTFOLD_1",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["AWS::SQS::Queue"],
        )

    def scan_resource_conf(self, conf) -> CheckResult:
        props = conf.get("Properties") or {}
        if props.get("KmsMasterKeyId"):
            return CheckResult.PASSED
        if str(props.get("SqsManagedSseEnabled", "")).lower() == "true":
            return CheckResult.PASSED
        return CheckResult.FAILED


check = SqsQueueEncrypted()
