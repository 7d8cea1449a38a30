"""rules.yaml: parse -> resolve env -> validate -> freeze; errors are one line naming the dotted path."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy import cli
from proxy.errors import ConfigError
from proxy.rules import build, load, loads
from tests.conftest import RULES

BASE: dict[str, Any] = {
    "default_task": "agent",
    "providers": {"openai": {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}},
    "tiers": {
        "frontier": {"targets": [{"provider": "openai", "model": "big", "params": {"max_tokens": 100}}]},
        "small": {"params": {"temperature": 0.1}, "targets": ["openai::tiny"]},
    },
    "tasks": {"agent": {"tier": "frontier"}, "summary": {"tier": "small", "params": {"max_tokens": 20}}},
}


def doc(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes; a value of ... deletes the key."""
    out = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = out
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


def test_shipped_rules_yaml_is_valid_and_mirrors_the_three_tiers() -> None:
    registry = load(RULES, environ={})
    # the product's three tiers, `embedding` (POST /v1/embeddings), and `rules`: a local handler that
    # answers before the small tier
    assert list(registry.tiers) == ["frontier", "mid", "small", "embedding", "rules"]
    assert (registry.default_task, registry.default_embedding_task) == ("agent", "retrieval")
    tiers = {name: task.tier for name, task in registry.tasks.items()}
    assert tiers == {
        "agent": "frontier",
        "narrative": "mid",
        "ad_copy": "mid",
        "summary": "mid",
        "title_generation": "small",
        "classification": "rules",
        "extraction": "small",
        "relevance": "small",
        "retrieval": "embedding",
        "eval_judge": "frontier",
    }
    # an embedding's baseline is its own tier: no chat model prices it
    assert {name: task.baseline for name, task in registry.tasks.items() if task.baseline != "frontier"} == {
        "retrieval": "embedding"
    }
    # until the Anthropic adapter lands, no tier is served first by it
    assert all(registry.providers[t.targets[0].provider].type in ("openai", "local") for t in registry.tiers.values())
    assert registry.providers["openai"].base_url == "https://api.openai.com/v1"
    assert registry.tiers["rules"].fallback_tier == "small"
    assert registry.tiers["small"].targets[0].params["reasoning_effort"] == "none"


def test_env_references_resolve_at_load() -> None:
    text = RULES.read_text()
    registry = loads(text, environ={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-x"})
    assert registry.providers["openai"].base_url == "http://127.0.0.1:9/v1"
    assert registry.providers["openai"].api_key == "sk-x"
    assert "sk-x" not in repr(registry.providers["openai"])
    with pytest.raises(ConfigError, match=r"^providers\.openai\.api_key: environment variable NOPE_KEY is not set"):
        build_with_env({"api_key": "${NOPE_KEY}"})


def build_with_env(provider_changes: dict[str, Any]) -> None:
    d = doc()
    d["providers"]["openai"].update(provider_changes)
    import yaml

    loads(yaml.safe_dump(d), environ={})


def test_registry_is_frozen() -> None:
    registry = build(doc())
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.default_task = "summary"  # type: ignore[misc]
    with pytest.raises(TypeError):
        registry.tasks["new"] = registry.tasks["agent"]  # type: ignore[index]
    with pytest.raises(TypeError):
        registry.tiers["small"].targets[0].params["temperature"] = 2  # type: ignore[index]


def test_params_merge_tier_into_targets_and_shorthands() -> None:
    registry = build(doc())
    tiny = registry.tiers["small"].targets[0]
    assert (tiny.provider, tiny.model, dict(tiny.params)) == ("openai", "tiny", {"temperature": 0.1})
    assert registry.tasks["summary"].params["max_tokens"] == 20
    assert build(doc(tasks__summary="small")).tasks["summary"].tier == "small"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks__summary__tier": "mdi"}, "tasks.summary.tier: 'mdi' is not a defined tier (defined: frontier, small)"),
        ({"tasks__summary__colour": "red"}, "tasks.summary.colour: unknown key"),
        ({"tiers__small__targets": []}, "tiers.small.targets: a tier needs at least one target"),
        ({"tiers__small__targets": "openai::tiny"}, "tiers.small.targets: expected a list of targets"),
        ({"tiers__frontier__targets__0__provider": "azure"}, "tiers.frontier.targets[0].provider: 'azure' is not"),
        ({"tiers__frontier__targets__0__model": 3}, "tiers.frontier.targets[0].model: expected a string, got int"),
        (
            {"tiers__frontier__targets__0__params": {"max_tokens": "lots"}},
            "tiers.frontier.targets[0].params.max_tokens",
        ),
        ({"tiers__small__params": {"temperature": 9}}, "tiers.small.params.temperature: expected a number"),
        ({"tiers__small__params": {"model": "x"}}, "tiers.small.params.model: is set by tiergate"),
        ({"tiers__small__targets": ["tiny"]}, "tiers.small.targets[0]: expected 'provider::model'"),
        ({"providers__openai__type": "grpc"}, "providers.openai.type: 'grpc' is not a provider type"),
        ({"providers__openai__base_url": "ftp://x"}, "providers.openai.base_url: expected an http(s) URL"),
        ({"providers__openai__type": ...}, "providers.openai.type: is required"),
        ({"default_task": "nope"}, "default_task: 'nope' is not a defined task"),
        ({"tasks__agent__baseline": "huge"}, "tasks.agent.baseline: 'huge' is not a defined tier"),
        (
            {"tasks__agent__allow_models": ["gpt-9"]},
            "tasks.agent.allow_models[0]: 'gpt-9' is not a model of any chat tier",
        ),
        (
            {"tasks__agent__allow_models": ["azure::gpt-9"]},
            "tasks.agent.allow_models[0]: 'azure' is not a defined provider",
        ),
        ({"tasks__summary__max_tokens_cap": 0}, "tasks.summary.max_tokens_cap: expected a positive integer"),
        ({"tasks": {}}, "tasks: at least one task is required"),
        ({"extra": 1}, "extra: unknown key"),
        ({"version": 2}, "version: unsupported registry version 2"),
    ],
)
def test_invalid_registries_name_the_dotted_path(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(doc(**changes))
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_syntax_error_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        loads("tiers: [unclosed", source="bad.yaml")
    assert str(err.value).startswith("bad.yaml: ") and "line 1" in str(err.value)


def test_check_command_reports_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(RULES)]) == 0
    assert "ok — 10 tasks, 5 tiers, 8 targets, 3 providers" in capsys.readouterr().out
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        RULES.read_text().replace("tier: mid\n    description: summaries", "tier: mdi\n    description: summaries")
    )
    assert cli.main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "tiergate: tasks.summary.tier: 'mdi' is not a defined tier (defined: frontier, mid, small, embedding, rules)"
    )


def test_check_console_script_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("providers: {}\ntiers: {}\ntasks: {}\nsurprise: true\n")
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "tiergate: surprise: unknown key (allowed: classifier, classify, default_embedding_task, default_task, ledger, "
        "policy, prices, providers, tasks, tiers,"
        " version)"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"type": "anthropic", "base_url": "http://x", "options": {"default_max_tokens": "lots"}},
         "providers.p.options.default_max_tokens: expected an integer greater than 0, got 'lots'"),
        ({"type": "anthropic", "base_url": "http://x", "options": {"anthropic_versoin": "2023-06-01"}},
         "providers.p.options.anthropic_versoin: unknown option"),
        ({"type": "openai", "base_url": "http://x", "options": {"max_tokens_field": "max_toks"}},
         "providers.p.options.max_tokens_field: expected max_completion_tokens or max_tokens"),
        ({"type": "local", "options": {"price_provider": 3}},
         "providers.p.options.price_provider: expected a genai-prices provider id"),
    ],
)  # fmt: skip
def test_provider_options_are_checked_at_load(provider: dict[str, Any], message: str) -> None:
    d = doc()
    d["providers"]["p"] = provider
    with pytest.raises(ConfigError) as err:
        build(d)
    assert str(err.value).startswith(message), str(err.value)
