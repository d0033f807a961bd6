"""Work botocore and moto redo on every request, done once or done faster, for local mode.

Memoized — each a function of its arguments alone, so remembering its answers changes no
result:

- botocore's `sanitize_user_agent_string_component` walks every character of every part of the
  User-Agent header, for every request (~5% of local mode's CPU under load);
- moto parses an UpdateExpression twice per UpdateItem (once to check its placeholders, once to
  run it) from the same string. The tree it builds is only read afterwards: the validator that
  resolves placeholders works on a deep copy of it;
- moto's Step Functions interpreter parses every JSONPath it evaluates (`$.slot`, a
  ResultPath) with jsonpath-ng, which builds a new PLY parser — its LALR tables — for each
  parse (~5% of local mode's CPU under load). A parsed path is only read: `find` and
  `update_or_create` walk it and change the document, never the path;
- moto lexes a ConditionExpression (nine regular expressions tried per token) up to twice per
  write. The tokens depend on the text alone and later steps build new nodes from them.

Copied faster — UpdateItem deep-copies the item twice (the answer's old image, a stream's) and
the update expression's tree once (the validator resolves placeholders on a copy): ~20% of
local mode's CPU under load, most of it in `copy.deepcopy`'s generic path, object by object.
The replacements copy the same structures directly: a `DynamoType` tree (acyclic, as DynamoDB
values are; the original's memo only guards against cycles) and the expression tree's nodes
(whose `parent` links do form cycles: those still go through the memo).

Walked faster — UpdateItem's validator walks the expression tree once per check (ten of them),
and moto's walk asks at every node whether it is a `Node` (an ABC: a Python-level
`__instancecheck__`) and whether the check handles it (building the check's map of node
classes anew, then another ABC test): ~12% of local mode's CPU under load. The replacement walks
the same nodes in the same order, calls the same hooks, and answers both questions from the
node's class, each class's answer found once by the same `issubclass` test (moto registers
no virtual subclasses of its node classes, whose answers could change).

`install()` puts them in place for as long as one local mode runs in the process (each
`install` has its `uninstall`); `moto_as_is()` suspends them (tests compare both ways).
"""

from __future__ import annotations

import copy
import functools
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.useragent
from moto.dynamodb.comparisons import ConditionExpressionParser
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.parsing.ast_nodes import (  # type: ignore[attr-defined]
    DepthFirstTraverser,
    Expression,
    Node,
    UpdateExpressionFunction,
)
from moto.dynamodb.parsing.expressions import (  # type: ignore[attr-defined]
    UpdateExpressionParser,
)
from moto.stepfunctions.parser.asl.component.common.path import result_path
from moto.stepfunctions.parser.asl.utils import json_path

# Expressions are few (the store writes a handful of fixed shapes); a bound keeps a client that
# builds expressions from data from growing the cache.
_EXPRESSIONS_KEPT = 512
_AGENT_PARTS_KEPT = 256
_JSON_PATHS_KEPT = 256  # a definition's paths; ours has a handful
# Values a deep copy keeps as they are (immutable).
_ATOMIC = frozenset({str, int, float, bool, bytes, type(None)})
_SET_TYPES = frozenset({"SS", "NS", "BS"})


class Memoized:
    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def apply(self) -> None:
        if self._saved:
            return
        sanitize = botocore.useragent.sanitize_user_agent_string_component
        self._replace(
            botocore.useragent,
            "sanitize_user_agent_string_component",
            functools.lru_cache(maxsize=_AGENT_PARTS_KEPT)(sanitize),
        )
        parser: Any = UpdateExpressionParser
        make = parser.__dict__["make"]  # the classmethod itself
        parse = functools.lru_cache(maxsize=_EXPRESSIONS_KEPT)(make.__func__)

        def cached_make(cls: Any, expression_str: str) -> Any:
            return parse(cls, expression_str)

        self._replace(parser, "make", classmethod(cached_make))
        for module in (json_path, result_path):
            cached = functools.lru_cache(maxsize=_JSON_PATHS_KEPT)(module.parse)
            self._replace(module, "parse", cached)
        self._replace(
            ConditionExpressionParser,
            "_lex_condition_expression",
            _memoized_lexer(ConditionExpressionParser.__dict__["_lex_condition_expression"]),
        )
        self._replace(DynamoType, "__deepcopy__", _copy_dynamo_type)
        self._replace(Node, "__deepcopy__", _copy_node)
        self._replace(DepthFirstTraverser, "traverse", _traverse)
        self._replace(Node, "find_clauses", _find_clauses)

    def undo(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    def _replace(self, owner: Any, name: str, value: Any) -> None:
        # An attribute the class did not have (Node.__deepcopy__) is deleted again by undo.
        self._saved.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, value)


_ABSENT = object()
_INSTALLED = Memoized()
_users = 0
_users_lock = threading.Lock()


def install() -> None:
    global _users  # noqa: PLW0603 - one set of patches per process, shared by local modes
    with _users_lock:
        _users += 1
        _INSTALLED.apply()


def uninstall() -> None:
    global _users  # noqa: PLW0603
    with _users_lock:
        _users = max(0, _users - 1)
        if _users == 0:
            _INSTALLED.undo()


@contextmanager
def moto_as_is() -> Iterator[None]:
    """Tests: moto's and botocore's own functions for the duration."""
    with _users_lock:
        active = bool(_INSTALLED._saved)
        _INSTALLED.undo()
    try:
        yield
    finally:
        if active:
            with _users_lock:
                _INSTALLED.apply()


def _memoized_lexer(lex: Any) -> Any:
    @functools.lru_cache(maxsize=_EXPRESSIONS_KEPT)
    def tokens(expression: str) -> tuple[Any, ...]:
        return tuple(lex(ConditionExpressionParser(expression, {}, {})))

    def lex_condition_expression(parser: Any) -> deque[Any]:
        # A fresh deque: the parser consumes it.
        return deque(tokens(parser.condition_expression))

    return lex_condition_expression


def _copy_dynamo_type(value: Any, memo: Any = None) -> Any:
    """What `DynamoType.__deepcopy__` makes, without `copy.deepcopy`'s dispatch per value."""
    copied = DynamoType.__new__(type(value))
    kind = copied.type = value.type
    inner = value.value
    if kind == "L":
        copied.value = [_copy_element(v, memo) for v in inner]
    elif kind == "M":
        copied.value = {k: _copy_element(v, memo) for k, v in inner.items()}
    elif kind in _SET_TYPES:
        copied.value = list(inner)
    else:
        copied.value = inner
    return copied


def _copy_element(value: Any, memo: Any) -> Any:
    if type(value) is DynamoType:
        return _copy_dynamo_type(value, memo)
    return copy.deepcopy(value, memo)


def _copy_node(node: Any, memo: dict[int, Any]) -> Any:
    """What `copy.deepcopy` makes of an expression tree node: every attribute copied, the
    links between nodes (children, parent) to the copies, through the memo."""
    found = memo.get(id(node))
    if found is not None:
        return found
    cls: Any = type(node)
    copied = cls.__new__(cls)
    memo[id(node)] = copied
    state = {}
    for key, value in node.__dict__.items():
        if type(value) in _ATOMIC:
            state[key] = value
        elif type(value) is list:
            state[key] = [v if type(v) in _ATOMIC else copy.deepcopy(v, memo) for v in value]
        else:
            state[key] = copy.deepcopy(value, memo)
    copied.__dict__.update(state)
    return copied


# Node classes (and other types met in a tree: values, None) -> whether each is a Node.
_is_node: dict[type, bool] = {}
# (check's class, node class) -> the name of the check's method that processes such nodes
# (the first class of its map the node is an instance of), or "" for none.
_handlers: dict[tuple[type, type], str] = {}
# Node classes -> whether `find_clauses` looks inside such a node.
_has_clauses: dict[type, bool] = {}


def _traverse(traverser: Any, root: Any) -> Any:
    """What `DepthFirstTraverser.traverse` does: children first, left to right, each after
    `pre_processing_of_child`; a node the check handles replaced by what its handler (the one
    `process` would call) makes of it, in its parent's children."""
    check = type(traverser)
    pre = traverser.pre_processing_of_child

    def visit(node: Any, child_id: int) -> Any:
        kind = type(node)
        is_node = _is_node.get(kind)
        if is_node is None:
            is_node = _is_node[kind] = issubclass(kind, Node)
        if not is_node:
            return node
        parent = node.parent
        children = node.children
        if children is not None:
            for i, child in enumerate(children):
                pre(node, i)
                visit(child, i)
        handler = _handlers.get((check, kind))
        if handler is None:
            handler = _handlers[(check, kind)] = _handler_name(traverser, kind)
        if handler:
            node = getattr(traverser, handler)(node)
            node.parent = parent
            if parent:
                parent.children[child_id] = node
        return node

    return visit(root, -1)


def _handler_name(traverser: Any, kind: type) -> str:
    for handled, handler in traverser._processing_map().items():
        if issubclass(kind, handled):
            # The map's values are the check's own methods (moto's every check); were one
            # not, the original `process` would be needed: fail loudly rather than differ.
            if getattr(handler, "__self__", None) is not traverser:
                raise TypeError(f"{type(traverser).__name__}: handler is not its own method")
            return str(handler.__func__.__name__)
    return ""


def _find_clauses(node: Any, clause_types: Any) -> list[Any]:
    """What `Node.find_clauses` answers: the children of those types, and those of the
    expressions and functions among the others, depth first."""
    clauses: list[Any] = []
    for child in node.children or ():
        kind = type(child)
        if kind in clause_types:
            clauses.append(child)
            continue
        inside = _has_clauses.get(kind)
        if inside is None:
            inside = _has_clauses[kind] = issubclass(kind, (Expression, UpdateExpressionFunction))
        if inside:
            clauses.extend(child.find_clauses(clause_types))
    return clauses
