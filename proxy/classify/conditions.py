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

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
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
        self._lowered: dict[str, str | None] = {}

    def ascii_lower(self, text: str) -> str | None:
        """``text`` lower-cased if it is ASCII (else ``None``), once per text: the regex prefilter's haystack."""
        known = self._lowered
        if text in known:  # not try/except: raising a KeyError costs more than a second lookup
            return known[text]
        lowered = known[text] = text.lower() if text.isascii() else None
        return lowered

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


Predicate = Callable[["RequestView"], bool]


def holds(condition: Condition, view: RequestView) -> bool:
    """Whether ``condition`` holds for the request seen through ``view``."""
    return predicate(condition)(view)


def predicate(condition: Condition) -> Predicate:
    """``condition`` as a function of the request, built once: the request path tries every rule on every
    untagged call, so the dispatch on ``kind`` and the regex prefilter are settled here, not per call."""
    kind = condition.kind
    if kind == "always":
        return _always
    if kind in ("all", "any", "not"):
        parts = tuple(predicate(c) for c in condition.children)
        return all_of(parts) if kind == "all" else any_of(parts) if kind == "any" else not_of(parts[0])
    if kind in _TEXTS or kind in _KEYED:
        return _text_test(condition)
    if kind == "tools":
        present, names = condition.present, condition.values
        if not names:
            return lambda view: view.has_tools is present
        return lambda view: not view.tool_names.isdisjoint(names)
    if kind == "response_format":
        formats = condition.values
        return lambda view: view.response_format in formats
    if kind in _RANGES:
        low, high = condition.low, condition.high
        if kind == "max_tokens":
            return lambda view: _within(low, high, view.max_tokens)
        return lambda view: _within(low, high, len(view.messages))
    raise AssertionError(f"unknown condition kind {kind!r}")  # parse_condition admits no other


def _always(view: RequestView) -> bool:
    return True


def all_of(parts: tuple[Predicate, ...]) -> Predicate:
    """Whether every one of ``parts`` holds, tried in order."""

    def test(view: RequestView) -> bool:
        for part in parts:
            if not part(view):
                return False
        return True

    return test


def any_of(parts: tuple[Predicate, ...]) -> Predicate:
    """Whether one of ``parts`` holds, tried in order."""

    def test(view: RequestView) -> bool:
        for part in parts:
            if part(view):
                return True
        return False

    return test


def not_of(part: Predicate) -> Predicate:
    """Whether ``part`` does not hold."""
    return lambda view: not part(view)


def _text_test(condition: Condition) -> Predicate:
    """A regex condition over one of the request's texts, a metadata field or a header value."""
    assert condition.pattern is not None
    search = _searcher(condition.pattern)
    kind, key = condition.kind, condition.key or ""
    if kind == "system":
        return lambda view: search(view.system, view)
    if kind == "last_user":
        return lambda view: search(view.last_user, view)
    if kind == "any_message":

        def any_message(view: RequestView) -> bool:
            for text in view.texts:
                if search(text, view):
                    return True
            return False

        return any_message
    if kind == "metadata":

        def metadata(view: RequestView) -> bool:
            fields = view.body.get("metadata")
            value = fields.get(key) if isinstance(fields, dict) else None
            return isinstance(value, str) and search(value, view)

        return metadata

    def header(view: RequestView) -> bool:
        headers = view.headers  # ``in`` first: a miss through starlette's Headers.get raises and catches
        return key in headers and search(headers[key], view)

    return header


def _within(low: int | None, high: int | None, value: int | None) -> bool:
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def first_match(rules: Sequence[ClassifyRule], view: RequestView) -> ClassifyRule | None:
    """The first rule whose condition holds, or ``None``."""
    return matcher(rules)(view)


def matcher(rules: Sequence[ClassifyRule]) -> Callable[[RequestView], ClassifyRule | None]:
    """``first_match`` over ``rules``, every rule's predicate built once (build it once per registry)."""
    compiled = tuple((predicate(rule.when), rule) for rule in rules)

    def match(view: RequestView) -> ClassifyRule | None:
        for test, rule in compiled:
            if test(view):
                return rule
        return None

    return match


# --- the regexes' literal prefilter ---------------------------------------------------------------
#
# Most rule regexes need some literal text ("(?i)conversation title", "^Extract\b", "copywriter|
# marketing copy"), and ``needle in text`` is a fast scan where a case-insensitive regex tries every
# position: the prefilter rules a text out before the regex runs. It only ever answers "cannot match":
# a pattern it does not understand, or a case-insensitive one over non-ASCII text (where Unicode case
# folding is not ``str.lower``), goes straight to the regex.

_PARSER: Any = importlib.import_module("re._parser")  # the stdlib's own regex parser (no public API)
_MIN_NEEDLE = 3


def required_literals(pattern: re.Pattern[str]) -> tuple[bool, tuple[str, ...]] | None:
    """Strings of which every match of ``pattern`` contains one (lower-cased when it ignores case, then
    ASCII only), or ``None`` when no such strings are known."""
    try:
        tree = _PARSER.parse(pattern.pattern, pattern.flags)
        needles = _required(list(tree))
    except Exception:  # an unexpected tree (another Python): no prefilter, never a wrong answer
        return None
    if needles is None:
        return None
    folded = bool(tree.state.flags & re.IGNORECASE)
    if folded:
        if not all(n.isascii() for n in needles):
            return None
        needles = tuple(n.lower() for n in needles)
    return folded, needles


def _required(items: list[tuple[Any, Any]]) -> tuple[str, ...] | None:
    """In a sequence of parsed regex items, the best literal (or set of a branch's literals) a match needs."""
    best: tuple[str, ...] | None = None

    def consider(needles: tuple[str, ...]) -> None:
        nonlocal best
        shortest = min(map(len, needles))
        if shortest >= _MIN_NEEDLE and (best is None or shortest > min(map(len, best))):
            best = needles

    run: list[str] = []
    for op, av in _flatten(items):
        if op is _PARSER.LITERAL:
            run.append(chr(av))
            continue
        if run:
            consider(("".join(run),))
            run = []
        if op is _PARSER.BRANCH:
            alternatives = [_required(list(branch)) for branch in av[1]]
            if all(a is not None for a in alternatives):
                consider(tuple(n for a in alternatives if a is not None for n in a))
    if run:
        consider(("".join(run),))
    return best


def _flatten(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Groups without flags of their own are part of the sequence around them."""
    out = []
    for op, av in items:
        if op is _PARSER.SUBPATTERN and not av[1] and not av[2]:
            out += _flatten(list(av[3]))
        else:
            out.append((op, av))
    return out


def _searcher(pattern: re.Pattern[str]) -> Callable[[str, RequestView], bool]:
    """``pattern.search(text) is not None``, behind the prefilter when the pattern has needles.

    Each variant is one function (no helper per needle): untagged calls run every rule, and at this size
    the calls are the cost.
    """
    search = pattern.search
    needles = required_literals(pattern)
    if needles is None:
        return lambda text, view: search(text) is not None
    folded, wanted = needles
    if not folded:
        return lambda text, view: any(map(text.__contains__, wanted)) and search(text) is not None
    if len(wanted) == 1:
        [needle] = wanted

        def folded_one(text: str, view: RequestView) -> bool:
            hay = view.ascii_lower(text)
            if hay is not None and needle not in hay:
                return False
            return search(text) is not None

        return folded_one

    def folded_search(text: str, view: RequestView) -> bool:
        hay = view.ascii_lower(text)
        if hay is not None and not any(map(hay.__contains__, wanted)):
            return False
        return search(text) is not None

    return folded_search


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
