"""Read template.yaml the way the local stack needs it: CloudFormation's short-form tags,
parameters with their defaults and overrides, and just enough intrinsic-function resolution to
give each function the environment that CloudFormation would."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository: devtools/local_stack/ is in it
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
SAM_TRANSFORM = ROOT / "scripts" / "sam_transform.py"
# aws-sam-translator pins pydantic, so it runs in the SAM CLI's own venv (`make install`).
SAM_PYTHON = Path(os.environ.get("PREFETCHER_SAM_PYTHON", ROOT / ".venv-sam" / "bin" / "python"))


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, !GetAtt, ...) as long forms."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_Loader.add_multi_constructor("!", _construct)


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    return loaded


def transformed(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template after the SAM transform (what CloudFormation deploys: the functions' roles
    and policies included), made by scripts/sam_transform.py with the SAM CLI's translator and
    kept under .local/ until the template or the script changes."""
    text = path.read_bytes()
    digest = hashlib.sha256(text + SAM_TRANSFORM.read_bytes()).hexdigest()[:24]
    cached = ROOT / ".local" / "sam-transform" / f"{digest}.json"
    if not cached.exists():
        if not SAM_PYTHON.exists():
            raise FileNotFoundError(
                f"{SAM_PYTHON} not found: the local stack checks IAM against the SAM-transformed template, "
                "made with the SAM CLI's translator; run `make install` (it creates .venv-sam)"
            )
        result = subprocess.run(
            [str(SAM_PYTHON), str(SAM_TRANSFORM), str(path)], capture_output=True, text=True, timeout=300, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"the SAM transform of {path.name} failed: {result.stderr.strip()[-2000:]}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(result.stdout)
        partial.replace(cached)
    loaded: dict[str, Any] = json.loads(cached.read_text())
    return loaded


def samconfig_parameter_overrides(path: Path = SAMCONFIG, command: str = "local_invoke") -> dict[str, str]:
    """The parameter_overrides that `sam <command>` would take from samconfig.toml."""
    if not path.exists():
        return {}
    config = tomllib.loads(path.read_text())
    raw = config.get("default", {}).get(command, {}).get("parameters", {}).get("parameter_overrides", "")
    return parse_overrides(raw)


def parse_overrides(raw: str | list[str]) -> dict[str, str]:
    """`Key=Value Key2="a,b"` (as sam accepts them) -> dict."""
    parts = raw if isinstance(raw, list) else shlex.split(raw)
    values = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"parameter override {part!r} is not Key=Value")
        values[key] = value
    return values


_NO_VALUE = object()  # what `Ref: AWS::NoValue` resolves to: the value is left out
RESOLVED = ("Ref", "Fn::GetAtt", "Fn::Sub", "Fn::Join", "Fn::Split", "Fn::If")


class UnsupportedIntrinsicError(ValueError):
    """The template uses an intrinsic function the local stack does not resolve: it says so
    rather than hand a function the function's text as a value."""


@dataclass
class Stack:
    """The template plus the values that CloudFormation would resolve in a deployment."""

    template: dict[str, Any]
    name: str = "eks-image-prefetcher"
    region: str = "us-east-1"
    account: str = "123456789012"
    overrides: dict[str, str] = field(default_factory=dict)
    physical: dict[str, str] = field(default_factory=dict)  # logical id -> Ref value
    arns: dict[str, str] = field(default_factory=dict)  # logical id -> Arn

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template["Resources"]
        return resources

    def parameters(self) -> dict[str, str]:
        values = {}
        for key, spec in self.template.get("Parameters", {}).items():
            if key in self.overrides:
                values[key] = self.overrides[key]
            elif "Default" in spec:
                values[key] = str(spec["Default"])
            else:
                raise ValueError(f"parameter {key} has no default: pass it as an override ({key}=...)")
            pattern = spec.get("AllowedPattern")
            if pattern and not re.fullmatch(pattern, values[key]):
                raise ValueError(f"parameter {key}={values[key]!r} does not match {pattern}")
            if "MaxLength" in spec and len(values[key]) > int(spec["MaxLength"]):
                raise ValueError(f"parameter {key} is longer than its MaxLength {spec['MaxLength']}")
            if spec.get("Type") == "Number" and not (
                float(spec.get("MinValue", "-inf")) <= float(values[key]) <= float(spec.get("MaxValue", "inf"))
            ):
                raise ValueError(
                    f"parameter {key}={values[key]} is outside {spec.get('MinValue')}..{spec.get('MaxValue')}"
                )
            allowed = spec.get("AllowedValues")
            if allowed and values[key] not in [str(v) for v in allowed]:
                raise ValueError(f"parameter {key}={values[key]!r} is not one of {allowed}")
        unknown = set(self.overrides) - set(self.template.get("Parameters", {}))
        if unknown:
            raise ValueError(f"unknown parameters: {sorted(unknown)}")
        return values

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {key: value for key, value in self.resources.items() if value["Type"] == kind}

    def local_name(self, logical_id: str) -> str:
        return f"{self.name}-{logical_id}"

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::StackName": self.name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def resolve(self, value: Any) -> Any:
        """Resolve Ref, Fn::GetAtt (Arn), Fn::Sub, Fn::Join, Fn::Split and Fn::If (with the
        template's Conditions); `Ref: AWS::NoValue` removes the value. Any other intrinsic
        function (Fn::Select, Fn::FindInMap, ...) raises UnsupportedIntrinsicError."""
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and arg == "AWS::NoValue":
                return _NO_VALUE
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self.condition(condition) else when_false)
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                if attribute != "Arn" or logical not in self.arns:
                    raise KeyError(f"cannot resolve GetAtt {logical}.{attribute} locally")
                return self.arns[logical]
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m.group(1)) or self._sub(m.group(1))), text)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(str(item) for item in self.resolve(items))
            if key.startswith("Fn::"):
                raise UnsupportedIntrinsicError(
                    f"the local stack cannot resolve the intrinsic function {key} "
                    f"(it resolves {', '.join(RESOLVED)}); teach template_resolver.Stack.resolve it"
                )
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def condition(self, name: str) -> bool:
        """A condition of the template's Conditions section (Fn::Equals, Fn::Not, Fn::And,
        Fn::Or, Condition)."""
        return bool(self._condition(self.template.get("Conditions", {})[name]))

    def _condition(self, expression: Any) -> Any:
        if isinstance(expression, dict) and len(expression) == 1:
            ((key, arg),) = expression.items()
            if key == "Fn::Equals":
                left, right = (self._condition(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._condition(arg[0])
            if key == "Fn::And":
                return all(self._condition(a) for a in arg)
            if key == "Fn::Or":
                return any(self._condition(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
        return self.resolve(expression)

    def _sub(self, name: str) -> str:
        if "." in name:
            return str(self.resolve({"Fn::GetAtt": name.split(".", 1)}))
        return str(self._ref(name))

    def _ref(self, name: str) -> str:
        pseudo = self.pseudo()
        if name in pseudo:
            return pseudo[name]
        parameters = self.parameters()
        if name in parameters:
            return parameters[name]
        if name in self.physical:
            return self.physical[name]
        raise KeyError(f"cannot resolve Ref {name} locally")

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The environment CloudFormation would give a function: Globals, then its own."""
        globals_env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own = self.resources[logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {key: str(self.resolve(value)) for key, value in {**globals_env, **own}.items()}

    def function_property(self, logical_id: str, name: str, default: Any = None) -> Any:
        own = self.resources[logical_id]["Properties"]
        if name in own:
            return own[name]
        return self.template.get("Globals", {}).get("Function", {}).get(name, default)
