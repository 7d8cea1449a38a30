"""A string a regular expression finds: what the fakes answer for a JSON Schema ``pattern``.

``matching(pattern)`` builds one from the regex's parse tree, the one ``re`` itself makes: a literal is
itself, a class its first member (or, negated, the first of a few candidates it excludes), ``\\d``/``\\w``/
``\\s`` a digit, a letter, a space, a repeat its minimum count, an alternation its first branch, a group
reference what the group matched; anchors and lookarounds take no characters. The result is checked with
``re.search`` (JSON Schema patterns are unanchored), and ``None`` says it could not build one.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# The parser and opcodes ``re`` itself uses (private modules, but the only regex parse tree in the standard
# library; typeshed has no stubs for them, hence Any).
sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")


def matching(pattern: str) -> str | None:
    """A string ``re.search(pattern, s)`` finds, built from the regex's parse tree; ``None`` if it cannot."""
    try:
        text = _emit(sre_parse.parse(pattern), {})
    except (re.error, _Unsupported, RecursionError):
        return None
    try:
        return text if re.search(pattern, text) else None
    except re.error:
        return None


class _Unsupported(Exception):
    pass


_CATEGORY_CHARS = {
    sre.CATEGORY_DIGIT: "0",
    sre.CATEGORY_NOT_DIGIT: "a",
    sre.CATEGORY_WORD: "a",
    sre.CATEGORY_NOT_WORD: "-",
    sre.CATEGORY_SPACE: " ",
    sre.CATEGORY_NOT_SPACE: "a",
}
_CANDIDATES = "aA0_- x.@"


def _emit(tree: Any, groups: dict[int, str]) -> str:
    out: list[str] = []
    for op, arg in tree:
        if op is sre.LITERAL:
            out.append(chr(arg))
        elif op is sre.NOT_LITERAL:
            out.append("a" if chr(arg) != "a" else "b")
        elif op is sre.ANY:
            out.append("a")
        elif op is sre.IN:
            out.append(_one_of(arg))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, _high, sub = arg
            out.append("".join(_emit(sub, groups) for _ in range(low)))
        elif op is sre.SUBPATTERN:
            group, _add, _del, sub = arg
            text = _emit(sub, groups)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif op is sre.ATOMIC_GROUP:
            out.append(_emit(arg, groups))
        elif op is sre.BRANCH:
            out.append(_emit(arg[1][0], groups))
        elif op is sre.GROUPREF:
            out.append(groups.get(arg, ""))
        elif op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            continue  # anchors and lookarounds take no characters
        else:
            raise _Unsupported(str(op))
    return "".join(out)


def _one_of(items: list[tuple[Any, Any]]) -> str:
    """A character of a ``[...]`` set (or a category such as ``\\d``)."""
    negated = bool(items) and items[0][0] is sre.NEGATE
    members = items[1:] if negated else items
    if not negated:
        op, arg = members[0]
        if op is sre.LITERAL:
            return chr(arg)
        if op is sre.RANGE:
            return chr(arg[0])
        if op is sre.CATEGORY and arg in _CATEGORY_CHARS:
            return _CATEGORY_CHARS[arg]
        raise _Unsupported(str(op))
    for candidate in _CANDIDATES:
        if not any(_covers(op, arg, candidate) for op, arg in members):
            return candidate
    raise _Unsupported("a negated set that excludes every candidate")


def _covers(op: Any, arg: Any, char: str) -> bool:
    if op is sre.LITERAL:
        return chr(arg) == char
    if op is sre.RANGE:
        return bool(arg[0] <= ord(char) <= arg[1])
    if op is sre.CATEGORY:
        probe = {sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D", sre.CATEGORY_WORD: r"\w",
                 sre.CATEGORY_NOT_WORD: r"\W", sre.CATEGORY_SPACE: r"\s", sre.CATEGORY_NOT_SPACE: r"\S"}.get(arg)  # fmt: skip
        return probe is not None and re.fullmatch(probe, char) is not None
    return True  # unknown member: assume it covers the character, try the next one
