"""checkov on the SAM template and its translation, with its skips kept honest.

Usage: checkov-infra.py TEMPLATE TRANSLATED   (run with .venv-security's Python; scripts/lint-infra)

1. checkov on both files as they are: 0 failed checks. A deliberate skip sits in TEMPLATE as
   `Metadata: checkov: skip: [{id: CKV_..., comment: reason}]` on its resource (SAM copies a
   function's Metadata to its AWS::Lambda::Function, and other resources pass through).
2. checkov again on copies of both without those skips: what fails there must be exactly
   what TEMPLATE skips. A skip that no longer matches a failure (the finding was fixed) must
   go, since checkov counts a skip as skipped whether or not the check would fail.
Every skip needs a one-line comment. Exits 1 on any failed check or skip problem.

CKV_AWS_27 is replaced, not skipped: for CloudFormation it reads KmsMasterKeyId only and
fails every SSE-SQS queue (SqsManagedSseEnabled: true); CKV_EVENTFOLD_1
(scripts/checkov/sqs_encrypted.py) accepts either and fails a queue with neither.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CHECKOV = [
    str(Path(sys.executable).parent / "checkov"),
    "--compact",
    "--skip-download",
    "--framework",
    "cloudformation",
    "--external-checks-dir",
    str(HERE / "checkov"),
    "--skip-check",
    "CKV_AWS_27",
]


class CloudFormationLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags as their long forms (!Ref x -> {Ref: x}, ...)."""


def _long_form(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _long_form)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CloudFormationLoader)


def skips_of(template):
    """{(logical id, check id): comment} of the template's checkov skips."""
    skips = {}
    for logical, resource in template["Resources"].items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []:
            skips[(logical, skip.get("id"))] = str(skip.get("comment") or "").strip()
    return skips


def without_skips(template):
    for resource in template["Resources"].values():
        metadata = resource.get("Metadata")
        if isinstance(metadata, dict):
            metadata.pop("checkov", None)
            if not metadata:
                resource.pop("Metadata")
    return template


def run_checkov(files, out_dir):
    """checkov's JSON report on `files`: a list of (file, check) pairs by outcome."""
    args = CHECKOV + [arg for f in files for arg in ("-f", str(f))]
    args += ["-o", "json", "--output-file-path", str(out_dir)]
    env = dict(os.environ, CKV_SKIP_PACKAGE_UPDATE_CHECK="true")
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    report_path = Path(out_dir) / "results_json.json"
    # checkov exits 1 on failed checks; anything else (or no report) is a crash.
    if done.returncode not in (0, 1) or not report_path.exists():
        sys.stderr.write(done.stderr)
        raise SystemExit(f"checkov-infra: checkov did not run to the end (exit {done.returncode})")
    reports = json.loads(report_path.read_text(encoding="utf-8"))
    reports = reports if isinstance(reports, list) else [reports]
    results = {"passed": [], "failed": [], "skipped": []}
    for report in reports:
        if report.get("summary", {}).get("parsing_errors"):
            raise SystemExit(f"checkov-infra: checkov could not parse {report['results'].get('parsing_errors')}")
        for outcome in results:
            results[outcome] += report.get("results", {}).get(f"{outcome}_checks", [])
    return results


def main():
    template_path, translated_path = sys.argv[1], sys.argv[2]
    labels = {template_path: template_path, translated_path: "<translated template>"}

    def label(path):
        return next((name for file, name in labels.items() if path.endswith(Path(file).name)), path)

    errors = []
    skips = skips_of(load(template_path))
    for (logical, check_id), comment in sorted(skips.items()):
        if not check_id:
            errors.append(f"{logical}: a skip without an id")
        elif not comment or "\n" in comment:
            errors.append(f"{logical}: skip {check_id} needs a one-line comment (the reason)")

    with tempfile.TemporaryDirectory(prefix="eventfold-checkov.") as tmp:
        # 1. As deployed, skips honoured.
        results = run_checkov([template_path, translated_path], Path(tmp) / "as-is")
        per_file = {}
        for outcome, checks in results.items():
            for check in checks:
                per_file.setdefault(label(check["file_path"]), {"passed": 0, "failed": 0, "skipped": 0})
                per_file[label(check["file_path"])][outcome] += 1
        for name, counts in sorted(per_file.items()):
            print(f"checkov: {name}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        for check in results["failed"]:
            first, last = check.get("file_line_range") or ["?", "?"]
            print(
                f"checkov: FAILED {check['check_id']} {check['check_name']}: {check['resource']} "
                f"({label(check['file_path'])}:{first}-{last})"
            )
        if results["failed"]:
            errors.append(
                f"{len(results['failed'])} failed check(s): fix them, or skip one in {template_path} with a reason"
            )

        # 2. Without the skips: what fails must be exactly what is skipped.
        stripped = []
        for path in (template_path, translated_path):
            copy = Path(tmp) / Path(path).name
            copy.write_text(json.dumps(without_skips(load(path))), encoding="utf-8")
            stripped.append(copy)
        unskipped = run_checkov(stripped, Path(tmp) / "unskipped")
        needed = {(c["resource"].split(".", 1)[1], c["check_id"]) for c in unskipped["failed"]}
        for logical, check_id in sorted(set(skips) - needed):
            errors.append(f"{logical}: skip {check_id} matches no failing check any more: remove it")

    for error in errors:
        print(f"checkov: {error}")
    if errors:
        sys.exit(1)
    print(f"checkov: 0 failed; {len(skips)} skips in {template_path}, each with a reason and each still needed")


if __name__ == "__main__":
    main()
