"""Which tasks a registry change touches (the gate evaluates exactly those)."""

from __future__ import annotations

from typing import Any

import yaml

from proxy.evals.diff import changed_tasks
from proxy.registry import Registry
from proxy.rules import loads
from tests.conftest import RULES

ENV = {"OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2"}


def _registry(edit: Any = None, env: dict[str, str] = ENV) -> Registry:
    doc = yaml.safe_load(RULES.read_text())
    if edit is not None:
        edit(doc)
    return loads(yaml.safe_dump(doc, sort_keys=False), environ=env)


def _changes(edit: Any, env: dict[str, str] = ENV) -> list[str]:
    return [c.describe() for c in changed_tasks(_registry(), _registry(edit, env))]


def test_the_same_registry_changes_nothing_even_with_other_keys() -> None:
    assert _changes(None) == []
    assert _changes(None, {"OPENAI_API_KEY": "rotated", "ANTHROPIC_API_KEY": "rotated"}) == []


def test_a_re_tiering_changes_that_task_only() -> None:
    def retier(doc: dict[str, Any]) -> None:
        doc["tasks"]["summary"]["tier"] = "small"

    assert _changes(retier) == ["summary: tier mid -> small, targets, prompt variant, policy"]


def test_a_tier_edit_changes_every_task_on_it_and_on_tiers_that_fall_back_into_it() -> None:
    def cheaper_mid(doc: dict[str, Any]) -> None:
        doc["tiers"]["mid"]["targets"][0]["model"] = "gpt-5.4-nano"

    # mid's own tasks, small's (small falls back into mid), and rules' (rules -> small -> mid)
    assert [c.split(":")[0] for c in _changes(cheaper_mid)] == [
        "narrative", "ad_copy", "summary", "title_generation", "classification", "extraction", "relevance",
    ]  # fmt: skip


def test_params_prompts_and_providers_count() -> None:
    def params(doc: dict[str, Any]) -> None:
        doc["tasks"]["relevance"]["params"]["max_tokens"] = 4

    def prompt(doc: dict[str, Any]) -> None:
        doc["tasks"]["title_generation"]["prompts"]["small"]["system"] = "Titles, 3-8 words."

    def endpoint(doc: dict[str, Any]) -> None:
        doc["providers"]["anthropic"]["options"]["anthropic_version"] = "2026-10-21"

    assert _changes(params) == ["relevance: task params"]
    assert _changes(prompt) == ["title_generation: prompt variant"]
    # every task with an anthropic target somewhere in its fallback order
    assert all(c.endswith(": targets") for c in _changes(endpoint)) and len(_changes(endpoint)) == 9


def test_a_new_task_needs_its_eval_and_a_dropped_one_does_not() -> None:
    def add(doc: dict[str, Any]) -> None:
        doc["tasks"]["faq"] = {"tier": "small"}

    def drop(doc: dict[str, Any]) -> None:
        del doc["tasks"]["ad_copy"]

    assert _changes(add) == ["faq: new task"]
    assert _changes(drop) == []
