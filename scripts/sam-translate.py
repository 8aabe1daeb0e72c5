"""Translates a SAM template to plain CloudFormation (JSON), offline.

Usage: sam-translate.py TEMPLATE OUT.json
Used by scripts/lint-infra (cfn-lint on the translation) and scripts/check-cdk (the CDK app
must synthesize the same resources).
"""

import sys

from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse


class NoManagedPolicyLookup:
    """Offline: the translator knows the ARNs of the managed policies SAM adds itself."""

    def load(self):
        return {}


source, target = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    template = yaml_parse(f.read())
translated = SamTemplateValidator(template, NoManagedPolicyLookup()).get_translated_template_if_valid()
with open(target, "w", encoding="utf-8") as f:
    f.write(translated)
