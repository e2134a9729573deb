"""The local stack's template resolver (devtools/local_stack/template_resolver.py): what it
resolves as CloudFormation would, and that it refuses what it cannot resolve."""

from __future__ import annotations

import pytest

from devtools.local_stack.template_resolver import Stack, UnsupportedIntrinsicError

TEMPLATE = {
    "Parameters": {"Clusters": {"Type": "String", "Default": "ml-prod,ml-batch"}},
    "Conditions": {},
    "Resources": {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Environment": {
                    "Variables": {
                        "CLUSTERS": {"Ref": "Clusters"},
                        "FIRST": {"Fn::Select": [0, {"Fn::Split": [",", {"Ref": "Clusters"}]}]},
                    }
                }
            },
        }
    },
}


def test_the_intrinsics_the_template_uses_resolve_as_cloudformation_resolves_them():
    # Given a stack whose parameter has a default
    stack = Stack(template=TEMPLATE, name="demo")
    # When a Ref, a Sub, a Join and a Split are resolved
    values = stack.resolve(
        {
            "ref": {"Ref": "Clusters"},
            "sub": {"Fn::Sub": "${AWS::StackName}-${AWS::Region}"},
            "join": {"Fn::Join": ["/", ["a", {"Ref": "AWS::AccountId"}]]},
            "split": {"Fn::Split": [",", {"Ref": "Clusters"}]},
        }
    )
    # Then each has the value CloudFormation would give it
    assert values == {
        "ref": "ml-prod,ml-batch",
        "sub": "demo-us-east-1",
        "join": "a/123456789012",
        "split": ["ml-prod", "ml-batch"],
    }


def test_an_intrinsic_the_resolver_does_not_know_is_refused_by_name_not_turned_into_text():
    # Given a function whose environment uses Fn::Select, which the local stack does not resolve
    stack = Stack(template=TEMPLATE, name="demo")
    # When the environment CloudFormation would give the function is resolved
    with pytest.raises(UnsupportedIntrinsicError) as refused:
        stack.function_environment("Fn")
    # Then the resolver refuses, naming the function, instead of passing "{'Fn::Select': ...}" on
    assert "Fn::Select" in str(refused.value)
