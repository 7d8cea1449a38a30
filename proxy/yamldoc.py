"""YAML read defensively: bounded nesting and size, duplicate keys refused, non-finite numbers refused.

``yaml.safe_load`` alone trusts its input in three ways a hostile (or mistyped) file breaks: a
"billion laughs" document of nested aliases expands to billions of nodes in whatever walks it; a few
thousand ``[`` overflow the recursive composer with a ``RecursionError``; a duplicated key silently keeps
the last value. ``load`` checks each before building Python objects, in time linear in the file, and
raises ``ConfigError`` whose message names the dotted path (or, where no path exists yet, the line).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from proxy.errors import ConfigError

MAX_DEPTH = 32  # rules.yaml nests about 6 deep
MAX_NODES = 100_000  # after alias expansion; rules.yaml has a few hundred


def load(text: str, source: str) -> Any:
    """The document in ``text`` as plain Python values, or ``ConfigError`` naming where it is wrong."""
    try:
        _check_depth(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError("", f"{source}: {problem}{where}") from None
    if node is None:
        return None
    _NodeCheck().walk(node, "")
    return yaml.SafeLoader(text).construct_document(node)


def _check_depth(text: str, source: str) -> None:
    """Walk the parser's events (iterative, unlike the composer) and refuse nesting past ``MAX_DEPTH``."""
    path: list[str] = []
    # per open collection: [is_mapping, expecting_key, index]
    stack: list[list[Any]] = []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            _enter_value(stack, path)
            if len(stack) >= MAX_DEPTH:
                where = _dotted(path[:8]) + ("..." if len(path) > 8 else "")
                raise ConfigError(where, f"nested deeper than {MAX_DEPTH} levels")
            stack.append([isinstance(event, yaml.MappingStartEvent), True, 0])
        elif isinstance(event, yaml.CollectionEndEvent):
            stack.pop()
            _leave_value(stack, path)
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            if stack and stack[-1][0] and stack[-1][1]:
                key = event.value if isinstance(event, yaml.ScalarEvent) else "*alias"
                path.append(str(key))
                stack[-1][1] = False
            else:
                _enter_value(stack, path)
                _leave_value(stack, path)


def _enter_value(stack: list[list[Any]], path: list[str]) -> None:
    if stack and not stack[-1][0]:  # an item of a sequence
        path.append(f"[{stack[-1][2]}]")
        stack[-1][2] += 1


def _leave_value(stack: list[list[Any]], path: list[str]) -> None:
    if not stack:
        return
    if stack[-1][0]:
        stack[-1][1] = True  # the next scalar is a key again
    if path:
        path.pop()


class _NodeCheck:
    """One walk over the composed node graph: sizes with aliases expanded (memoised per node, so the
    walk is linear however deep the aliases nest), duplicate keys, self-references, non-finite floats."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()
        self.total = 0
        self._floats = yaml.SafeLoader("")

    def walk(self, node: yaml.Node, path: str) -> None:
        known = self.sizes.get(id(node))
        if known is not None:
            self._count(known, path)
            return
        if id(node) in self.open:
            raise ConfigError(path, "an alias refers to the value that contains it")
        self.open.add(id(node))
        before = self.total
        self._count(1, path)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                here = f"{path}.{name}" if path else name
                if name in seen:
                    raise ConfigError(here, f"duplicate key (line {key.start_mark.line + 1}): each key may appear once")
                seen.add(name)
                self.walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, f"{path}[{i}]")
        elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:float":
            number = self._floats.construct_yaml_float(node)
            if not math.isfinite(number):
                raise ConfigError(path, f"expected a finite number, got {node.value!r}")
        self.open.discard(id(node))
        self.sizes[id(node)] = self.total - before

    def _count(self, n: int, path: str) -> None:
        self.total += n
        if self.total > MAX_NODES:
            raise ConfigError(path, f"expands to more than {MAX_NODES:,} values (aliases nested in aliases?)")


def _dotted(path: list[str]) -> str:
    out = ""
    for part in path:
        out += part if part.startswith("[") or not out else "." + part
    return out
