"""Least privilege and operability of template.yaml: IAM actions, the tag conditions on
ssm:SendCommand, queue policies, an alarm on every dead-letter queue and on the pull failure rate,
the dashboard, and checkov (on the template and on its SAM transform) with every skip justified.
docs/operations.md explains each of these."""

from __future__ import annotations

import ast
import json
import operator
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefetcher import eks_tags

from devtools.local_stack.template_resolver import load
from tests.helpers import ROOT

SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
OPERATIONS = ROOT / "docs" / "operations.md"
DEAD_LETTER_QUEUES = {"ImagePushDLQ", "AuditDLQ", "NodeJoinDLQ", "FleetCheckDLQ", "RolloutDLQ", "EventDeliveryDLQ"}
SENDING_FUNCTIONS = {"ImagePushFunction", "NodeJoinFunction", "SsmAuditFunction", "FleetCheckFunction"}


# ---------------------------------------------------------------- helpers ----------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def transformed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template after the SAM transform, made by the script `make lint` and the local stack
    use (scripts/sam_transform.py, with the SAM CLI's translator)."""
    if not SAM_PYTHON.exists():
        pytest.fail(f"{SAM_PYTHON} not found: run `make install` (it creates .venv-sam)")
    result = subprocess.run(
        [str(SAM_PYTHON), "scripts/sam_transform.py", "template.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("sam") / "template.json"
    path.write_text(result.stdout)
    return path


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {key: value for key, value in template["Resources"].items() if value["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement the template writes: SAM function policies, roles, queue policies."""
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::Serverless::Function":
            documents = [p for p in properties.get("Policies", []) if isinstance(p, dict) and "Statement" in p]
        elif resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::SQS::QueuePolicy"):
            documents = [properties["PolicyDocument"]]
        for document in documents:
            for statement in as_list(document["Statement"]):
                yield logical_id, statement


def getatt(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return logical_id, attribute
    return None


def queue_writers(template: dict[str, Any]) -> dict[str, set[str]]:
    """Queue -> the EventBridge rules that send to it (as a target or as its dead-letter queue)."""
    writers: dict[str, set[str]] = {}
    for rule_id, rule in resources(template, "AWS::Events::Rule").items():
        for target in rule["Properties"].get("Targets", []):
            for arn in (target.get("Arn"), target.get("DeadLetterConfig", {}).get("Arn")):
                ref = getatt(arn)
                if ref and template["Resources"][ref[0]]["Type"] == "AWS::SQS::Queue":
                    writers.setdefault(ref[0], set()).add(rule_id)
    for function_id, function in resources(template, "AWS::Serverless::Function").items():
        for event_id, event in function["Properties"].get("Events", {}).items():
            if event["Type"] == "EventBridgeRule":
                ref = getatt(event["Properties"].get("DeadLetterConfig", {}).get("Arn"))
                if ref:
                    # SAM names the rule it generates <function><event>.
                    writers.setdefault(ref[0], set()).add(f"{function_id}{event_id}")
    return writers


def dead_letter_queues(template: dict[str, Any]) -> set[str]:
    found = set()
    for queue in resources(template, "AWS::SQS::Queue").values():
        ref = getatt(queue["Properties"].get("RedrivePolicy", {}).get("deadLetterTargetArn"))
        if ref:
            found.add(ref[0])
    for function in resources(template, "AWS::Serverless::Function").values():
        destination = function["Properties"].get("EventInvokeConfig", {}).get("DestinationConfig", {})
        ref = getatt(destination.get("OnFailure", {}).get("Destination"))
        if ref:
            found.add(ref[0])
    for rule in resources(template, "AWS::Events::Rule").values():
        for target in rule["Properties"].get("Targets", []):
            ref = getatt(target.get("DeadLetterConfig", {}).get("Arn"))
            if ref:
                found.add(ref[0])
    for function in resources(template, "AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            ref = getatt(event.get("Properties", {}).get("DeadLetterConfig", {}).get("Arn"))
            if ref:
                found.add(ref[0])
    return found


def notifies_the_alarm_topic(alarm: dict[str, Any]) -> bool:
    expected = {"Fn::If": ["NotifyAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    return alarm.get("AlarmActions") == expected and alarm.get("OKActions") == expected


def state_metrics() -> dict[str, str]:
    """SsmAuditFunction's node state -> metric name (its _STATE_METRICS)."""
    tree = ast.parse((ROOT / "functions" / "ssm_audit" / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_STATE_METRICS" for t in node.targets):
            value: dict[str, str] = ast.literal_eval(node.value)
            return value
    raise AssertionError("functions/ssm_audit/app.py has no _STATE_METRICS")


_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Gt: operator.gt,
}


def evaluate(expression: str, values: dict[str, float]) -> float:
    """A CloudWatch metric-math expression for one period (IF, FILL, + - * /, >), where a
    metric without a value is missing (None)."""

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                return None
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            return _OPERATORS[type(node.ops[0])](walk(node.left), walk(node.comparators[0]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "FILL":
                value = walk(node.args[0])
                return walk(node.args[1]) if value is None else value
            if node.func.id == "IF":
                return walk(node.args[1]) if walk(node.args[0]) else walk(node.args[2])
        raise AssertionError(f"unexpected metric math: {ast.dump(node)}")

    return float(walk(ast.parse(expression, mode="eval")))


# ---------------------------------------------------------------- IAM --------------------


def test_no_iam_statement_grants_a_wildcard_action(template, transformed):
    # Given the template and what SAM makes of it (the functions' generated roles)
    generated = json.loads(transformed.read_text())
    # When every statement's actions are read
    found = list(statements(template)) + list(statements(generated))
    assert any(logical_id.endswith("Role") for logical_id, _ in found), "the generated roles were read"
    # Then each names its actions one by one
    for logical_id, statement in found:
        assert "NotAction" not in statement, logical_id
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{logical_id}: {action}"


def test_every_send_command_to_instances_is_limited_to_target_cluster_nodes(template):
    # Given the functions that send our document
    functions = resources(template, "AWS::Serverless::Function")
    senders = {
        function_id
        for function_id, function in functions.items()
        for _, statement in statements({"Resources": {function_id: function}})
        if "ssm:SendCommand" in as_list(statement["Action"])
    }
    assert senders == SENDING_FUNCTIONS
    for function_id in senders:
        # When their SendCommand statements are read
        tag_keys = set()
        for _, statement in statements({"Resources": {function_id: functions[function_id]}}):
            if "ssm:SendCommand" not in as_list(statement["Action"]):
                continue
            resource = statement["Resource"]
            assert resource != "*", function_id
            arn = resource["Fn::Sub"]
            if ":document/" in arn:
                # Then the document may only be ours
                assert arn.endswith(":document/${PrefetchDocument}"), function_id
                assert "Condition" not in statement, "instance tags do not apply to the document"
                continue
            # and an instance only when it carries a target cluster's name in an EKS tag
            assert arn.endswith(":instance/*"), function_id
            assert "Condition" in statement, f"{function_id}: SendCommand on any instance, without a tag condition"
            (condition,) = statement["Condition"]["StringEquals"].items()
            key, value = condition
            assert key.startswith("ssm:resourceTag/"), function_id
            assert value == {"Fn::Split": [",", {"Ref": "TargetClusters"}]}, function_id
            tag_keys.add(key.removeprefix("ssm:resourceTag/"))
        # One statement per node kind (conditions in one statement are ANDed)
        assert tag_keys == {eks_tags.MANAGED_CLUSTER_TAG, eks_tags.KARPENTER_CLUSTER_TAG}, function_id


def test_resource_star_only_for_apis_without_resource_level_permissions(template):
    from devtools.local_stack import iam

    # Given every statement of the template
    for logical_id, statement in statements(template):
        # When it applies to every resource
        if "*" in as_list(statement.get("Resource")):
            # Then it is an action that supports nothing narrower (the Service Authorization
            # Reference lists no resource type for it)
            for action in as_list(statement["Action"]):
                assert not iam.action_spec(*action.split(":")).resource_types, f"{logical_id}: {action}"
    # and the template says so where it does it
    lines = (ROOT / "template.yaml").read_text().splitlines()
    stars = [n for n, line in enumerate(lines) if re.fullmatch(r'\s*Resource: "\*"', line)]
    assert stars
    for n in stars:
        assert "no resource-level permissions" in lines[n - 1], lines[n - 1]


def test_every_queue_eventbridge_writes_to_accepts_only_its_rules(template):
    # Given the queues EventBridge sends to (targets and dead-letter queues)
    writers = queue_writers(template)
    assert set(writers) >= {"AuditQueue", "NodeJoinQueue", "EventDeliveryDLQ"}
    # When the queue policies are read
    allowed: dict[str, set[str]] = {}
    for policy_id, policy in resources(template, "AWS::SQS::QueuePolicy").items():
        queues = [q["Ref"] for q in policy["Properties"]["Queues"]]
        for statement in as_list(policy["Properties"]["PolicyDocument"]["Statement"]):
            # Then every statement for a service names the sources it accepts
            assert statement["Effect"] == "Allow", policy_id
            assert "Service" in statement["Principal"], policy_id
            sources = as_list(statement["Condition"]["ArnEquals"]["aws:SourceArn"])
            rules = {ref[0] for ref in map(getatt, sources) if ref and ref[1] == "Arn"}
            assert len(rules) == len(sources), f"{policy_id}: every source is one of our rules"
            for queue in queues:
                allowed.setdefault(queue, set()).update(rules)
    # and each queue accepts exactly the rules that write to it
    for queue, rules in writers.items():
        assert allowed.get(queue) == rules, queue


# ---------------------------------------------------------------- alarms -----------------


def test_every_dead_letter_queue_has_an_alarm_on_its_depth(template):
    # Given every dead-letter queue (redrive targets, on-failure destination, EventBridge's)
    queues = dead_letter_queues(template)
    assert queues == DEAD_LETTER_QUEUES
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    for queue in queues:
        # When its alarms are looked for
        watching = [
            alarm["Properties"]
            for alarm in alarms.values()
            if alarm["Properties"].get("Namespace") == "AWS/SQS"
            and alarm["Properties"]["Dimensions"]
            == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
        ]
        # Then one fires on the first visible message and notifies the optional topic
        assert len(watching) == 1, queue
        alarm = watching[0]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible", queue
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold"), queue
        assert alarm["EvaluationPeriods"] == 1, queue
        assert alarm["TreatMissingData"] == "ignore", "an idle queue that still holds messages stays in ALARM"
        assert notifies_the_alarm_topic(alarm), queue


def test_the_failure_rate_alarm_counts_every_outcome_the_audit_function_emits(template):
    # Given the metrics SsmAuditFunction emits (Powertools EMF: namespace, dimension service)
    names = state_metrics()
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    service = template["Resources"]["SsmAuditFunction"]["Properties"]["Environment"]["Variables"][
        "POWERTOOLS_SERVICE_NAME"
    ]
    source = (ROOT / "functions" / "ssm_audit" / "app.py").read_text()
    assert not re.search(r"add_dimension|default_dimensions|dimensions=", source), "the alarm expects `service` only"
    # When the failure-rate alarm is read
    alarm = template["Resources"]["PullFailureRateAlarm"]["Properties"]
    stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
    # Then it reads each outcome's sum over 15 minutes, by the names and dimension emitted
    assert {s["Metric"]["MetricName"] for s in stats.values()} == set(names.values())
    for stat in stats.values():
        assert stat["Metric"]["Namespace"] == namespace
        assert stat["Metric"]["Dimensions"] == [{"Name": "service", "Value": service}]
        assert (stat["Period"], stat["Stat"]) == (900, "Sum")
    ids = {stat["Metric"]["MetricName"]: metric_id for metric_id, stat in stats.items()}
    by_state = {state: ids[name] for state, name in names.items()}
    expressions = {m["Id"]: m["Expression"] for m in alarm["Metrics"] if "Expression" in m}
    (returned,) = [m["Id"] for m in alarm["Metrics"] if m.get("ReturnData")]

    def rate(**counts: float) -> float:
        values = {by_state[state.replace("_", "-")]: count for state, count in counts.items()}
        for metric_id, expression in expressions.items():
            if metric_id != returned:
                values[metric_id] = evaluate(expression, values)
        return evaluate(expressions[returned], values)

    # and its value is failed + timed-out + undeliverable over every outcome, in percent
    assert rate(failed=1, timed_out=1, undeliverable=1, cached=5, present=1, skipped_disk=1) == 30
    assert rate(skipped_disk=3, cached=1) == 0, "skipped-disk is not a failure"
    assert rate() == 0, "no outcome is no failure"
    assert rate(failed=2) == 100
    assert alarm["Threshold"] == {"Ref": "FailureRateAlarmPercent"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert template["Parameters"]["FailureRateAlarmPercent"]["Default"] == 10
    assert alarm["TreatMissingData"] == "notBreaching"
    assert notifies_the_alarm_topic(alarm)


def test_every_function_has_an_errors_alarm(template):
    # Given every function
    alarms = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()]
    for function_id in resources(template, "AWS::Serverless::Function"):
        # When its Lambda Errors alarms are looked for
        watching = [
            a
            for a in alarms
            if a.get("Namespace") == "AWS/Lambda"
            and a.get("MetricName") == "Errors"
            and a["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
        ]
        # Then there is one, and it notifies the optional topic
        assert len(watching) == 1, function_id
        assert notifies_the_alarm_topic(watching[0]), function_id


def test_alarm_notifications_are_optional(template):
    # Given the topic parameter, empty by default
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    assert re.fullmatch(parameter["AllowedPattern"], "")
    assert re.fullmatch(parameter["AllowedPattern"], "arn:aws:sns:eu-west-1:123456789012:oncall")
    # Then the alarms notify it only when it is set
    assert template["Conditions"]["NotifyAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}


# ---------------------------------------------------------------- dashboard --------------


def emitted_metrics() -> set[str]:
    """The metric names our functions emit: literal names, the node-state names, and the
    Pushes<Action> / NodeEvents<Action> names built from the actions push.py and join.py return."""
    names = set(state_metrics().values())
    # and the audit function's other name tables (_OTHER_STATE_METRICS, _VERIFIED_METRICS)
    tree = ast.parse((ROOT / "functions" / "ssm_audit" / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "").endswith("_METRICS") for t in node.targets):
            names |= set(ast.literal_eval(node.value).values())
    for app in (ROOT / "functions").glob("*/app.py"):
        names |= set(re.findall(r'add_metric\(name="(\w+)"', app.read_text()))
    from prefetcher import join

    naming = {"push": lambda action: "Pushes" + action.capitalize(), "join": join.action_metric}
    for module, name_of in naming.items():
        tree = ast.parse((ROOT / "layers" / "prefetcher" / "prefetcher" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "action":
                for constant in ast.walk(node.value):
                    if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                        names.add(name_of(constant.value))
    return names


def test_the_dashboard_is_valid_json_and_shows_every_path(template):
    # Given the dashboard
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    parameters = template["Parameters"]
    pseudo = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}

    # When CloudFormation's !Sub is applied (every name it uses must exist)
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in pseudo:
            return pseudo[name]
        if name in parameters:
            return str(parameters[name]["Default"])
        logical_id = name.split(".")[0]
        assert logical_id in template["Resources"], name
        return f"{logical_id}-physical"

    resolved = json.loads(re.sub(r"\$\{([^}!]+)\}", substitute, body))
    # Then it is a dashboard whose metric widgets all name their Region
    widgets = resolved["widgets"]
    metric_widgets = [w["properties"] for w in widgets if w["type"] == "metric"]
    assert all(p["region"] == "eu-west-1" for p in metric_widgets)
    # and it shows every function, dead-letter queue and alarm
    text = json.dumps(resolved)
    for logical_id in (
        *resources(template, "AWS::Serverless::Function"),
        *DEAD_LETTER_QUEUES,
        *resources(template, "AWS::CloudWatch::Alarm"),
    ):
        assert f"{logical_id}-physical" in text, logical_id
    # and only metrics our functions emit, in our namespace
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    shown = set()
    for properties in metric_widgets:
        current: list[str] = []
        for row in properties["metrics"]:
            plain = [part for part in row if isinstance(part, str)]
            if not plain:
                continue  # an expression
            # "." repeats the previous row's value at that position
            current = [prev if part == "." else part for part, prev in zip(plain, current or plain, strict=True)]
            if current[0] == namespace:
                shown.add(current[1])
    assert shown >= {"CommandsSent", "NodeImagesCached", "TimeToCachedSeconds", "NodeEventsSent"}
    assert shown <= emitted_metrics(), shown - emitted_metrics()
    assert template["Outputs"]["DashboardName"]["Value"] == {"Ref": "OperationsDashboard"}


# ---------------------------------------------------------------- checkov ----------------


@pytest.mark.slow
def test_checkov_finds_nothing_that_is_not_justified(transformed):
    # Given checkov, installed in its own venv by `make install`
    if not CHECKOV.exists():
        pytest.fail(f"checkov not found at {CHECKOV}: run `make install` (it creates .venv-tools)")
    # When it scans the template and the template after the SAM transform
    result = subprocess.run(
        [
            str(CHECKOV),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
            "-f",
            "template.yaml",
            "-f",
            str(transformed),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"checkov gave no JSON report (exit {result.returncode}):\n{result.stderr[-2000:]}")
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    # Then every resource was read, and no check failed
    assert summary["parsing_errors"] == 0, result.stderr
    assert summary["resource_count"] > 40
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0, result.stderr
    # and each skip says why, next to its resource, and is explained in docs/operations.md
    documented = OPERATIONS.read_text()
    for check in report["results"]["skipped_checks"]:
        comment = check["check_result"].get("suppress_comment", "")
        assert len(comment) > 60, f"{check['check_id']} on {check['resource']}: {comment!r}"
        assert check["check_id"] in documented, check["check_id"]
