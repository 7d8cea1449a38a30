"""A call site's remaining rules, ruled out together: what must be in a call for any of them to hold.

Once a site's conditions are settled (proxy.classify.sites), what is left of its rules reads the call's
own parts: the last user message, every message, a header, a metadata field. Most of those tests need
something to be there: a literal their regex cannot match without (the prefilter's, see
``conditions.required_literals``), a header or a field at all. A ``Gate`` holds those needs for all the
rules at once, grouped by where they look, and answers whether any is met: most untagged calls meet
none, and are then done with every rule in a few substring scans instead of one test per rule.

A gate only ever rules out: when it says a need may be met, the rules run as written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.classify.conditions import RequestView, required_literals
from proxy.registry import Condition


@dataclass(frozen=True, slots=True)
class Need:
    """Where a condition looks (``kind``, and ``key`` for a header or a metadata field) and what must be
    there: one of ``needles`` (lower-cased and looked for in the lower-cased text when ``folded``), or
    with no needles, the header or field at all."""

    kind: str  # "last_user" | "any_message" | "header" | "metadata"
    key: str
    folded: bool
    needles: tuple[str, ...] | None


def needs(condition: Condition) -> frozenset[Need] | None:
    """What must be in a call for a condition on its own parts to hold (one of the needs at least);
    ``None`` when nothing is known to be needed (a regex with no literal it requires)."""
    literals = required_literals(condition.pattern) if condition.pattern is not None else None
    folded, needles = literals if literals is not None else (False, None)
    if condition.kind in ("last_user", "any_message"):
        return None if needles is None else frozenset({Need(condition.kind, "", folded, needles)})
    if condition.kind in ("header", "metadata"):
        return frozenset({Need(condition.kind, condition.key or "", folded, needles)})
    return None


class Gate:
    """Whether a call may meet one of ``needs``: ``False`` means it meets none."""

    def __init__(self, needs: Iterable[Need]) -> None:
        ordered = sorted(set(needs), key=lambda n: (n.kind, n.key, n.folded, n.needles or ()))
        # The last user message's and every message's needles, merged: one scan per text and kind.
        self._user = _merged(n for n in ordered if n.kind == "last_user")
        self._messages = _merged(n for n in ordered if n.kind == "any_message")
        self._headers = tuple((n.key, n.folded, n.needles) for n in ordered if n.kind == "header")
        self._metadata = tuple((n.key, n.folded, n.needles) for n in ordered if n.kind == "metadata")

    def __call__(self, view: RequestView) -> bool:
        plain, folded = self._user
        if (plain or folded) and _found(view.last_user, plain, folded, view):
            return True
        plain, folded = self._messages
        if plain or folded:
            for text in view.texts:
                if _found(text, plain, folded, view):
                    return True
        headers = view.headers
        for key, fold, needles in self._headers:
            if key in headers and (needles is None or _found(headers[key], *_split(fold, needles), view)):
                return True
        if self._metadata:
            fields = view.body.get("metadata")
            if isinstance(fields, dict):
                for key, fold, needles in self._metadata:
                    value = fields.get(key)
                    if isinstance(value, str) and (needles is None or _found(value, *_split(fold, needles), view)):
                        return True
        return False


def _merged(needs: Iterable[Need]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(plain needles, folded needles) of text needs (which always have needles)."""
    plain: list[str] = []
    folded: list[str] = []
    for need in needs:
        (folded if need.folded else plain).extend(need.needles or ())
    return tuple(dict.fromkeys(plain)), tuple(dict.fromkeys(folded))


def _split(folded: bool, needles: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return ((), needles) if folded else (needles, ())


def _found(text: str, plain: tuple[str, ...], folded: tuple[str, ...], view: RequestView) -> bool:
    """Whether ``text`` holds a plain needle, or (lower-cased) a folded one; a non-ASCII text always may
    (Unicode case folding is not ``str.lower``: the prefilter's rule)."""
    if plain and any(map(text.__contains__, plain)):
        return True
    if folded:
        hay = view.ascii_lower(text)
        return hay is None or any(map(hay.__contains__, folded))
    return False
