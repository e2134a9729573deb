"""Print template.yaml as CloudFormation deploys it: after the SAM transform, made with the SAM
CLI's own translator (run with .venv-sam's python: aws-sam-translator pins pydantic, so it lives
beside the SAM CLI, not in the project's venv).

Used by `make lint` (checkov sees the roles and policies SAM generates), by the template tests,
and by the local stack, which enforces each function's generated role on every AWS call it makes
(devtools/local_stack/iam.py).

    .venv-sam/bin/python scripts/sam_transform.py template.yaml > transformed.json
"""

from __future__ import annotations

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicyNames:
    """SAM looks managed policy names up in IAM; the template names none, so no lookup is needed."""

    def load(self) -> dict[str, str]:
        return {}


def main(path: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(path) as handle:  # noqa: PTH123 - runs under .venv-sam, kept dependency-free
        template = yaml_parse(handle.read())
    for resource in template["Resources"].values():
        # Code locations are not part of what is checked; SAM only needs them to be S3 URIs.
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://sam-transform/function.zip"
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = "s3://sam-transform/layer.zip"
    json.dump(transform(template, {}, NoManagedPolicyNames()), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
