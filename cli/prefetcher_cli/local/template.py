"""Read template.yaml the way the local stack needs it: CloudFormation's short-form tags,
parameters with their defaults and overrides, and just enough intrinsic-function resolution to
give each function the environment that CloudFormation would."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"


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
        """Resolve Ref, Fn::GetAtt (Arn), Fn::Sub, Fn::Join, Fn::If-free values."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
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
        return {key: self.resolve(item) for key, item in value.items()}

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
