"""Read what local mode needs from `template.yaml`, so local mode runs what would be deployed:
the functions and their HTTP routes, the state machines' definitions and substitutions, and the
table definition."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# `${OtherFunction}` in a `!Sub`: local mode names functions by their logical ids.
_SUBSTITUTION = re.compile(r"\$\{(\w+)\}")


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that understands CloudFormation's short tags (`!Ref`, `!GetAtt`, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@dataclass(frozen=True)
class Route:
    method: str  # "ANY" or an HTTP method
    path: str  # "/a/{b}" or "$default"


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str  # "module.function"
    routes: tuple[Route, ...] = ()
    # Environment variables the template sets from the function names of other functions
    # (`!Sub '..${OtherFunction}..'`), with the logical ids in place of the names.
    environment: dict[str, str] = field(default_factory=dict)
    # Schedule events (`rate(1 minute)`), as seconds.
    schedules: tuple[int, ...] = ()
    # Seconds an invocation may run (the function's Timeout, else the Globals' one).
    timeout: int = 3


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    definition_path: Path
    # Substitution name -> logical id of the function whose ARN it is.
    function_substitutions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    root: Path
    functions: dict[str, FunctionSpec]
    state_machines: dict[str, StateMachineSpec]
    table_properties: dict[str, Any]


def load_template(path: Path) -> Template:
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    resources: dict[str, Any] = document["Resources"]
    # Lambda's default Timeout is 3 s.
    default_timeout = int(((document.get("Globals") or {}).get("Function") or {}).get("Timeout", 3))
    root = path.parent
    functions: dict[str, FunctionSpec] = {}
    state_machines: dict[str, StateMachineSpec] = {}
    table: dict[str, Any] | None = None
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            routes = tuple(
                Route(method=str(e["Properties"]["Method"]).upper(), path=e["Properties"]["Path"])
                for e in (props.get("Events") or {}).values()
                if e.get("Type") == "HttpApi"
            )
            schedules = tuple(
                _rate_seconds(str(e["Properties"]["Schedule"]))
                for e in (props.get("Events") or {}).values()
                if e.get("Type") == "Schedule"
            )
            variables = ((props.get("Environment") or {}).get("Variables")) or {}
            environment = {
                name: value["Fn::Sub"]
                for name, value in variables.items()
                if isinstance(value, dict)
                and isinstance(value.get("Fn::Sub"), str)
                and "AWS::" not in value["Fn::Sub"]
            }
            functions[logical_id] = FunctionSpec(
                logical_id=logical_id,
                code_uri=root / props["CodeUri"],
                handler=props["Handler"],
                routes=routes,
                environment={k: _SUBSTITUTION.sub(r"\1", v) for k, v in environment.items()},
                schedules=schedules,
                timeout=int(props.get("Timeout", default_timeout)),
            )
        elif kind == "AWS::Serverless::StateMachine":
            substitutions = {
                name: value["Fn::GetAtt"][0]
                for name, value in (props.get("DefinitionSubstitutions") or {}).items()
                if isinstance(value, dict) and "Fn::GetAtt" in value
            }
            state_machines[logical_id] = StateMachineSpec(
                logical_id=logical_id,
                definition_path=root / props["DefinitionUri"],
                function_substitutions=substitutions,
            )
        elif kind == "AWS::DynamoDB::Table":
            table = props
    if not state_machines or table is None:
        raise ValueError(f"{path}: needs a state machine and a DynamoDB table")
    return Template(root, functions, state_machines, table)


def _rate_seconds(expression: str) -> int:
    """`rate(1 minute)` -> 60."""
    amount, unit = expression.removeprefix("rate(").removesuffix(")").split()
    return int(amount) * {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}[unit]
