"""``classify:`` rules: parsed from rules.yaml, evaluated over one request, and checked for dead rules.

    classify:
      - name: titles                       # recorded as task_source rule:titles
        task: title_generation
        when:                              # every key must hold (a mapping is an "all")
          system: "(?i)conversation title" # regex over the system/developer messages
      - name: agents
        task: agent
        when: {tools: true}                # any tool offered; or a list of tool names, one of which is
      - name: json-extraction
        task: extraction
        when:
          any:
            - response_format: json_schema # or a list of types
            - last_user: "(?i)^extract"
          not: {header: {user-agent: "(?i)^curl/"}}

Conditions: ``system``, ``last_user``, ``any_message`` (regex, searched), ``tools``, ``response_format``,
``max_tokens`` and ``messages`` (``{min, max}``, inclusive), ``metadata`` and ``header`` (a mapping of
field -> regex), combined with ``all`` / ``any`` (lists) and ``not``. Regexes are compiled at load; a bad
one, an unknown condition or an unknown task is a ``ConfigError`` naming the dotted path.

``dead_rules`` finds rules that can never match because an earlier one always matches first, where that
is decidable: the earlier rule's conditions are a subset of the later's (ranges compared as ranges).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from proxy.errors import ConfigError
from proxy.registry import ClassifyRule, Condition

_TEXTS = ("system", "last_user", "any_message")
_RANGES = ("max_tokens", "messages")
_KEYED = ("metadata", "header")
_KINDS = (*_TEXTS, "tools", "response_format", *_RANGES, *_KEYED, "all", "any", "not")
_FORMATS = ("text", "json_object", "json_schema")


# --- parsing ------------------------------------------------------------------------------------


def parse_rules(node: Any, path: str, tasks: Sequence[str]) -> tuple[ClassifyRule, ...]:
    """The ``classify:`` list -> rules, in order; names unique, tasks defined."""
    if not isinstance(node, list):
        raise ConfigError(path, "expected a list of rules (name, task, when)")
    rules, seen = [], set()
    for i, item in enumerate(node):
        here = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(here, "expected a mapping with name, task and when")
        for key in item:
            if key not in ("name", "task", "when", "description"):
                raise ConfigError(f"{here}.{key}", "unknown key (allowed: description, name, task, when)")
        for key in ("name", "task", "when"):
            if key not in item:
                raise ConfigError(f"{here}.{key}", "is required")
        name, task = item["name"], item["task"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ConfigError(f"{here}.name", "expected a name of letters, digits, '_', '-' and '.'")
        if name in seen:
            raise ConfigError(f"{here}.name", f"{name!r} names an earlier rule too")
        seen.add(name)
        if task not in tasks:
            raise ConfigError(f"{here}.task", f"{task!r} is not a defined task (defined: {', '.join(tasks)})")
        rules.append(ClassifyRule(name, task, parse_condition(item["when"], f"{here}.when")))
    return tuple(rules)


def parse_condition(node: Any, path: str) -> Condition:
    """A ``when:`` mapping (all of its keys) -> one condition."""
    if not isinstance(node, dict):
        raise ConfigError(path, f"expected a mapping of conditions ({', '.join(_KINDS)})")
    parts = [_one(kind, value, f"{path}.{kind}") for kind, value in node.items()]
    if not parts:
        return Condition("always")
    return parts[0] if len(parts) == 1 else Condition("all", children=tuple(parts))


def _one(kind: Any, value: Any, path: str) -> Condition:
    if kind in _TEXTS:
        return Condition(kind, pattern=_regex(value, path))
    if kind == "tools":
        if isinstance(value, bool):
            return Condition(kind, present=value)
        return Condition(kind, present=True, values=_names(value, path))
    if kind == "response_format":
        values = _names(value, path)
        for v in values:
            if v not in _FORMATS:
                raise ConfigError(path, f"{v!r} is not a response_format type ({', '.join(_FORMATS)})")
        return Condition(kind, values=values)
    if kind in _RANGES:
        return _range(kind, value, path)
    if kind in _KEYED:
        if not isinstance(value, dict) or len(value) != 1:
            raise ConfigError(path, "expected one field and its regex, e.g. {user-agent: '^MobileApp/'}")
        [(key, pattern)] = value.items()
        key = str(key).lower() if kind == "header" else str(key)
        return Condition(kind, key=key, pattern=_regex(pattern, f"{path}.{key}"))
    if kind in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ConfigError(path, "expected a non-empty list of conditions")
        return Condition(kind, children=tuple(parse_condition(v, f"{path}[{i}]") for i, v in enumerate(value)))
    if kind == "not":
        return Condition(kind, children=(parse_condition(value, path),))
    raise ConfigError(path, f"unknown condition (allowed: {', '.join(_KINDS)})")


def _regex(value: Any, path: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, "expected a regular expression")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigError(path, f"not a valid regular expression: {exc}") from None


def _names(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(path, "expected a name or a non-empty list of names")


def _range(kind: str, value: Any, path: str) -> Condition:
    if not isinstance(value, dict) or not value or set(value) - {"min", "max"}:
        raise ConfigError(path, "expected {min: N, max: N} (either may be left out)")
    bounds = {}
    for key in ("min", "max"):
        bound = value.get(key)
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
            raise ConfigError(f"{path}.{key}", "expected a whole number >= 0")
        bounds[key] = bound
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise ConfigError(path, "min is above max: the range is empty")
    return Condition(kind, low=bounds["min"], high=bounds["max"])


# --- evaluating ---------------------------------------------------------------------------------


class RequestView:
    """What conditions read from one request, each part computed at most once."""

    def __init__(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        self.body = body
        self.headers = headers

    @cached_property
    def messages(self) -> list[Mapping[str, Any]]:
        messages = self.body.get("messages")
        return [m for m in messages if isinstance(m, Mapping)] if isinstance(messages, list) else []

    @cached_property
    def system(self) -> str:
        return "\n".join(text(m) for m in self.messages if m.get("role") in ("system", "developer"))

    @cached_property
    def last_user(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return text(message)
        return ""

    @cached_property
    def texts(self) -> list[str]:
        return [text(m) for m in self.messages]

    @cached_property
    def tool_names(self) -> frozenset[str]:
        tools = self.body.get("tools")
        names = set()
        for tool in tools if isinstance(tools, list) else ():
            function = tool.get("function") if isinstance(tool, dict) else None
            name = (function or tool).get("name") if isinstance(function or tool, dict) else None
            if isinstance(name, str):
                names.add(name)
        return frozenset(names)

    @cached_property
    def has_tools(self) -> bool:
        tools = self.body.get("tools")
        return isinstance(tools, list) and bool(tools)

    @cached_property
    def response_format(self) -> str:
        fmt = self.body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        return kind if isinstance(kind, str) else "text"

    @cached_property
    def max_tokens(self) -> int | None:
        for field in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(field)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None


def text(message: Mapping[str, Any]) -> str:
    """A message's text: a string content, or its text parts joined with a space."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def holds(condition: Condition, view: RequestView) -> bool:
    """Whether ``condition`` holds for the request seen through ``view``."""
    kind = condition.kind
    if kind == "always":
        return True
    if kind == "all":
        return all(holds(c, view) for c in condition.children)
    if kind == "any":
        return any(holds(c, view) for c in condition.children)
    if kind == "not":
        return not holds(condition.children[0], view)
    if kind == "system":
        return _search(condition, view.system)
    if kind == "last_user":
        return _search(condition, view.last_user)
    if kind == "any_message":
        return any(_search(condition, t) for t in view.texts)
    if kind == "tools":
        if not condition.values:
            return view.has_tools is condition.present
        return not view.tool_names.isdisjoint(condition.values)
    if kind == "response_format":
        return view.response_format in condition.values
    if kind == "max_tokens":
        return _within(condition, view.max_tokens)
    if kind == "messages":
        return _within(condition, len(view.messages))
    if kind == "metadata":
        metadata = view.body.get("metadata")
        value = metadata.get(condition.key) if isinstance(metadata, dict) else None
        return isinstance(value, str) and _search(condition, value)
    if kind == "header":
        value = view.headers.get(condition.key or "")
        return value is not None and _search(condition, value)
    raise AssertionError(f"unknown condition kind {kind!r}")  # parse_condition admits no other


def _search(condition: Condition, value: str) -> bool:
    assert condition.pattern is not None
    return condition.pattern.search(value) is not None


def _within(condition: Condition, value: int | None) -> bool:
    if value is None:
        return False
    return (condition.low is None or value >= condition.low) and (condition.high is None or value <= condition.high)


def first_match(rules: Sequence[ClassifyRule], view: RequestView) -> ClassifyRule | None:
    """The first rule whose condition holds, or ``None``."""
    for rule in rules:
        if holds(rule.when, view):
            return rule
    return None


# --- dead rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadRule:
    index: int
    rule: ClassifyRule
    by_index: int
    by: ClassifyRule

    def describe(self) -> str:
        return (
            f"classify[{self.index}] ({self.rule.name}) can never match: classify[{self.by_index}] "
            f"({self.by.name}) matches every request it would"
        )


def dead_rules(rules: Sequence[ClassifyRule]) -> list[DeadRule]:
    """Rules shadowed by an earlier rule whose conditions they all include (decidable cases only)."""
    atoms = [_atoms(rule.when) for rule in rules]
    dead = []
    for later, mine in enumerate(atoms):
        if mine is None:
            continue
        for earlier in range(later):
            theirs = atoms[earlier]
            if theirs is not None and all(any(_implies(m, t) for m in mine) for t in theirs):
                dead.append(DeadRule(later, rules[later], earlier, rules[earlier]))
                break
    return dead


def _atoms(condition: Condition) -> list[Condition] | None:
    """A conjunction's atoms; ``None`` when the condition has an ``any``/``not`` (undecided here)."""
    if condition.kind == "always":
        return []
    if condition.kind == "all":
        out: list[Condition] = []
        for child in condition.children:
            more = _atoms(child)
            if more is None:
                return None
            out += more
        return out
    if condition.kind in ("any", "not"):
        return None
    return [condition]


def _implies(mine: Condition, theirs: Condition) -> bool:
    """Whether ``mine`` holding means ``theirs`` holds."""
    if mine.kind != theirs.kind or mine.key != theirs.key:
        return False
    if mine.kind in _RANGES:
        low_ok = theirs.low is None or (mine.low is not None and mine.low >= theirs.low)
        high_ok = theirs.high is None or (mine.high is not None and mine.high <= theirs.high)
        return low_ok and high_ok
    if mine.kind == "response_format" or (mine.kind == "tools" and mine.values and theirs.values):
        return set(mine.values) <= set(theirs.values)
    if mine.kind == "tools":
        return (mine.present is True and not theirs.values and theirs.present is True) or (
            not mine.values and not theirs.values and mine.present is theirs.present
        )
    if mine.pattern is None or theirs.pattern is None:
        return False
    return (mine.pattern.pattern, mine.pattern.flags) == (theirs.pattern.pattern, theirs.pattern.flags)
