"""Pure functions botocore and moto recompute on every request, memoized for local mode.

Each is a function of its arguments alone, so remembering its answers changes no result:

- botocore's `sanitize_user_agent_string_component` walks every character of every part of the
  User-Agent header, for every request (~5% of local mode's CPU under load);
- moto parses an UpdateExpression twice per UpdateItem (once to check its placeholders, once to
  run it) from the same string. The tree it builds is only read afterwards: the validator that
  resolves placeholders works on a deep copy of it;
- moto's Step Functions interpreter parses every JSONPath it evaluates (`$.slot`, a
  ResultPath) with jsonpath-ng, which builds a new PLY parser — its LALR tables — for each
  parse (~5% of local mode's CPU under load). A parsed path is only read: `find` and
  `update_or_create` walk it and change the document, never the path.

`Memoized.apply()` installs them; `undo()` puts the originals back.
"""

from __future__ import annotations

import functools
from typing import Any

import botocore.useragent
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

    def undo(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)

    def _replace(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, value)
