"""Call sites: what a request shares with the other calls of its template, worked out once per template.

An app's call site sends one template: the same system prompt, message count, response_format, tools and
max_tokens every time, with the user's text filled in. That part (``site_key``) decides much of the
classifier's work: the system prompt's and the structure's features, every rule condition over those
fields, and the model's sums over those features. ``Sites`` keeps that work per site (the most recent
ones), so a call pays only for its own part: the user message's features, the rule conditions that read
it (or the headers, the metadata, every message: ruled out together by the site's gate when none of what
they need is there, proxy.classify.gate), and the model's sums over the user's features.

The results are the ones the straightforward path gives (tests/test_classify_speed.py holds them to it):
the same features and rule verdicts, and the same probabilities to about 1e-13 (the model sums its
weights in fixed point, see ``model._POINT``). Nothing is kept by the user's text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.classify.conditions import Predicate, RequestView, all_of, any_of, not_of, predicate
from proxy.classify.features import Template, site_features, template_of
from proxy.classify.gate import Gate, Need, needs
from proxy.classify.model import Model, Partial
from proxy.registry import ClassifyRule, Condition

# The conditions whose verdict ``site_key`` fixes; the other kinds read a call's own parts.
SITE_KINDS = frozenset({"system", "tools", "response_format", "max_tokens", "messages", "always"})
SIZE = 4096  # sites kept: a few templates per app, plus room for prompts with per-user parts

Match = Callable[[RequestView], ClassifyRule | None]


def site_key(view: RequestView) -> tuple[Any, ...]:
    """What a call site's template fixes: every ``SITE_KINDS`` condition and ``site_features`` depend on
    these values only (tool names only when tools are offered: with none, there are no names)."""
    tools = view.tool_names if view.has_tools else None
    return (view.system, len(view.messages), view.response_format, tools, view.max_tokens)


@dataclass(frozen=True, slots=True)
class Site:
    ids: frozenset[int]  # its features under the ledger's seed (system prompt and structure)
    match: Match  # the rules, with the site's conditions decided: first_match for the site's calls
    base: Partial | None  # the model's sums over ``ids``; None without a model (or one of another seed)
    template: Template  # ``ids`` as the ledger keeps them (once per site, rows refer to it)


class SiteRules:
    """``classify:`` rules, each built once as a tree of tests, so that a site's conditions can be settled."""

    def __init__(self, rules: Sequence[ClassifyRule]) -> None:
        self._rules = tuple((_node(rule.when), rule) for rule in rules)

    def settle(self, view: RequestView) -> Match:
        """``first_match`` for the calls of ``view``'s site: a rule its site rules out is left out, a rule
        its site alone satisfies ends the list, and of the others only the tests of a call's own parts are
        kept (``all`` / ``any`` / ``not`` reduced accordingly). Order is kept: the first rule still wins.
        When every rule left needs something in the call (proxy.classify.gate), a call with none of it
        is done without trying them."""
        left: list[tuple[Predicate, ClassifyRule]] = []
        wanted: set[Need] | None = set()
        otherwise = None
        for node, rule in self._rules:
            verdict = _settle(node, view)
            if verdict is True:
                otherwise = rule
                break
            if verdict is not False:
                test, needs = verdict
                left.append((test, rule))
                wanted = None if wanted is None or needs is None else wanted | needs
        return _first(tuple(left), otherwise, Gate(wanted) if wanted is not None and left else None)


class Sites:
    """The sites seen lately (at most ``size``; the least recently used goes first), each settled once.

    One per model: a model's sums belong to it, so a reloaded model gets a new ``Sites``.
    """

    def __init__(self, rules: SiteRules, seed: int, model: Model | None, size: int = SIZE) -> None:
        self._rules = rules
        self._seed = seed
        self._model = model if model is not None and model.seed == seed else None
        self._size = size
        self._kept: dict[tuple[Any, ...], Site] = {}

    def __call__(self, view: RequestView) -> Site:
        key = site_key(view)
        kept = self._kept
        site = kept.pop(key, None)
        if site is None:
            site = self._site(view)
            if len(kept) >= self._size:
                del kept[next(iter(kept))]  # dicts keep insertion order: the first is the least recent
        kept[key] = site
        return site

    def _site(self, view: RequestView) -> Site:
        ids = site_features(view, self._seed)
        base = self._model.partial(ids) if self._model is not None else None
        return Site(ids, self._rules.settle(view), base, template_of(ids))


@dataclass(frozen=True, slots=True)
class _Node:
    condition: Condition
    test: Predicate  # the whole condition's
    children: tuple[_Node, ...]  # of all / any / not


def _node(condition: Condition) -> _Node:
    return _Node(condition, predicate(condition), tuple(_node(c) for c in condition.children))


_Left = tuple[Predicate, frozenset[Need] | None]  # the test a call's own parts still face, and what it needs


def _settle(node: _Node, view: RequestView) -> bool | _Left:
    """The condition for calls of ``view``'s site: a verdict, when the site decides it; else the test left
    and what a call needs to pass it (``None``: not known)."""
    kind = node.condition.kind
    if kind in SITE_KINDS:
        return bool(node.test(view))
    if kind == "not":
        inner = _settle(node.children[0], view)
        return (not inner) if isinstance(inner, bool) else (not_of(inner[0]), None)
    if kind in ("all", "any"):
        decisive = kind == "any"  # the verdict of one part that decides the whole: True for any, False for all
        rest: list[_Left] = []
        for child in node.children:
            verdict = _settle(child, view)
            if verdict is decisive:
                return decisive
            if not isinstance(verdict, bool):
                rest.append(verdict)
        if not rest:
            return not decisive
        if len(rest) == 1:
            return rest[0]
        tests = tuple(test for test, _ in rest)
        parts = [n for _, n in rest]
        if decisive:  # any: the needs of one of its parts, so all of theirs (unless one's are unknown)
            return any_of(tests), None if None in parts else frozenset().union(*(n for n in parts if n is not None))
        return all_of(tests), next((n for n in parts if n is not None), None)  # all: any one part's needs
    return node.test, needs(node.condition)  # a call's own part: tested per call


def _first(
    tests: tuple[tuple[Predicate, ClassifyRule], ...], otherwise: ClassifyRule | None, gate: Gate | None
) -> Match:
    def match(view: RequestView) -> ClassifyRule | None:
        if gate is not None and not gate(view):
            return otherwise
        for test, rule in tests:
            if test(view):
                return rule
        return otherwise

    return match
