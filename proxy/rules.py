"""rules.yaml -> a validated, frozen ``Registry`` (the types are in ``proxy.registry``).

Loading is parse -> resolve
``${VAR}`` / ``${VAR:-default}`` -> validate -> freeze. Every error is a ``ConfigError`` whose message
starts with the dotted path of the offending value, e.g.
``tasks.summary.tier: 'mdi' is not a defined tier (defined: frontier, mid, small)``.
``tiergate check`` and server start-up run this same code.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from proxy import kinds, prompts, yamldoc
from proxy import policy as policy_mod
from proxy.classify import conditions
from proxy.classify import model as classifier_model
from proxy.errors import ConfigError
from proxy.handlers import load_handler
from proxy.prompts import PromptVariant
from proxy.providers import PROVIDER_TYPES, provider_class
from proxy.registry import (
    CHAT,
    EMBEDDING,
    CachePolicy,
    ClassifierSettings,
    LedgerPolicy,
    Price,
    ProviderConfig,
    Registry,
    Target,
    Task,
    Tier,
    article,
)

# Body fields tiergate owns; a registry may not set them as params.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
MAX_RETAIN_DAYS = 36_500  # a hundred years: beyond it, leave retain_days out (keep everything)


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Registry:
    """Read, resolve, validate and freeze the registry at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    return loads(text, environ=environ, source=str(path))


def loads(text: str, environ: Mapping[str, str] | None = None, source: str = "<string>") -> Registry:
    """Like ``load`` for YAML text."""
    raw = yamldoc.load(text, source)
    env = os.environ if environ is None else environ
    # The file's text, not the resolved document: the registry is what the file says; the environment
    # (endpoints, keys) is where it runs.
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return build(_resolve_env(raw, "", env), source=source, content_hash=digest)


def _resolve_env(node: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    raise ConfigError(path, f"environment variable {name} is not set (use ${{{name}:-default}})")
                return default
            return value

        resolved = _ENV_REF.sub(sub, node)
        if "${" in _ENV_REF.sub("", node):
            # "${OPENAI_API_KEY" (no brace) or "${1BAD}" would otherwise reach a provider verbatim.
            raise ConfigError(
                path, "a '${' with no matching '}' or a bad variable name (write ${NAME} or ${NAME:-default})"
            )
        return resolved
    if isinstance(node, dict):
        return {k: _resolve_env(v, _join(path, str(k)), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    return node


def build(raw: Any, source: str = "<memory>", content_hash: str | None = None) -> Registry:
    """Validate an already-parsed document and freeze it into a ``Registry``.

    ``content_hash`` defaults to the sha256 of the document's canonical JSON (sorted keys).
    """
    doc = _mapping(
        raw,
        "",
        required={"providers", "tiers", "tasks"},
        optional={
            "version",
            "default_task",
            "default_embedding_task",
            "prices",
            "policy",
            "classify",
            "classifier",
            "ledger",
        },
    )
    version = doc.get("version", 1)
    if version != 1:
        raise ConfigError("version", f"unsupported registry version {version!r} (this tiergate reads version 1)")

    providers = {name: _provider(name, node) for name, node in _named(doc["providers"], "providers")}
    tiers = {name: _tier(name, node, providers) for name, node in _named(doc["tiers"], "tiers")}
    if not tiers:
        raise ConfigError("tiers", "at least one tier is required")
    _check_fallback_tiers(tiers)
    tasks = {name: _task(name, node, tiers, providers) for name, node in _named(doc["tasks"], "tasks")}
    if not tasks:
        raise ConfigError("tasks", "at least one task is required")

    default_task = kinds.default_task(doc, tasks, CHAT, "default_task")
    if default_task is None:
        raise ConfigError("tasks", "at least one task on a chat tier is required (the default task of untagged calls)")
    default_embedding_task = kinds.default_task(doc, tasks, EMBEDDING, "default_embedding_task")

    prices = {name: _price(node, f"prices.{name}") for name, node in _mapping(doc.get("prices", {}), "prices").items()}

    names = [name for name, task in tasks.items() if task.kind == CHAT]
    kinds.check_classify_tasks(doc.get("classify", []), tasks)
    return Registry(
        default_task=default_task,
        providers=MappingProxyType(providers),
        tiers=MappingProxyType(tiers),
        tasks=MappingProxyType(tasks),
        source=source,
        prices=MappingProxyType(prices),
        policy=MappingProxyType(policy_mod.parse_layer(doc.get("policy", {}), "policy")),
        content_hash=content_hash or document_hash(doc),
        classify=conditions.parse_rules(doc.get("classify", []), "classify", names),
        classifier=_classifier(doc.get("classifier"), "classifier", list(tasks), source),
        ledger=_ledger(doc.get("ledger"), "ledger"),
        default_embedding_task=default_embedding_task,
    )


def _ledger(node: Any, path: str) -> LedgerPolicy:
    """``ledger: {retain_days: N}``: whole days, at least one (a day is rolled up only once it is over)."""
    if node is None:
        return LedgerPolicy()
    spec = _mapping(node, path, optional={"retain_days"})
    days = spec.get("retain_days")
    if days is None:
        return LedgerPolicy()
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETAIN_DAYS:
        raise ConfigError(
            f"{path}.retain_days", f"expected a whole number of days from 1 to {MAX_RETAIN_DAYS:,}, got {days!r}"
        )
    return LedgerPolicy(retain_days=days)


def _classifier(node: Any, path: str, tasks: list[str], source: str) -> ClassifierSettings | None:
    """``classifier:``: its model file must load and know only tasks the registry has (checked now)."""
    if node is None:
        return None
    spec = _mapping(node, path, required={"model"}, optional={"min_confidence", "capture_text"})
    location = Path(_str(spec["model"], f"{path}.model"))
    if not location.is_absolute() and source not in ("<string>", "<memory>"):
        location = Path(source).parent / location  # relative to rules.yaml, as a reader expects
    confidence = spec.get("min_confidence", 0.7)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence <= 1:
        raise ConfigError(f"{path}.min_confidence", f"expected a probability in (0, 1], got {confidence!r}")
    capture = spec.get("capture_text", False)
    if not isinstance(capture, bool):
        raise ConfigError(f"{path}.capture_text", f"expected true or false, got {capture!r}")
    try:
        classifier_model.load(location, tasks)
    except classifier_model.ModelError as exc:
        raise ConfigError(f"{path}.model", str(exc)) from None
    return ClassifierSettings(model=str(location), min_confidence=float(confidence), capture_text=capture)


def document_hash(doc: Any) -> str:
    """sha256 of ``doc`` as canonical JSON (sorted keys; a value JSON lacks is written as its ``str``)."""
    canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


def _check_fallback_tiers(tiers: Mapping[str, Tier]) -> None:
    for name, tier in tiers.items():
        seen = [name]
        nxt = tier.fallback_tier
        while nxt is not None:
            path = f"tiers.{seen[-1]}.fallback_tier"
            if nxt not in tiers:
                raise ConfigError(path, f"{nxt!r} is not a defined tier ({_defined(tiers)})")
            if tiers[nxt].kind != tier.kind:
                raise ConfigError(
                    path,
                    f"{nxt!r} is {article(tiers[nxt].kind)} tier; {article(tier.kind)} tier falls back to another {tier.kind} tier only",
                )
            if nxt in seen:
                raise ConfigError(path, f"fallback tiers form a cycle: {' -> '.join([*seen, nxt])}")
            seen.append(nxt)
            nxt = tiers[nxt].fallback_tier


def _price(node: Any, path: str) -> Price:
    spec = _mapping(node, path, required={"input", "output"}, optional={"cached_input", "cache_write"})
    values: dict[str, float] = {}
    for key, value in spec.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ConfigError(f"{path}.{key}", f"expected a price in USD per 1M tokens (a number >= 0), got {value!r}")
        values[key] = float(value)
    return Price(**values)


def _provider(name: str, node: Any) -> ProviderConfig:
    path = f"providers.{name}"
    spec = _mapping(node, path, required={"type"}, optional={"base_url", "api_key", "options"})
    kind = _str(spec["type"], f"{path}.type")
    if kind not in PROVIDER_TYPES:
        raise ConfigError(f"{path}.type", f"{kind!r} is not a provider type ({', '.join(sorted(PROVIDER_TYPES))})")
    adapter = provider_class(kind)
    base_url = _str(spec.get("base_url", ""), f"{path}.base_url", allow_empty=not adapter.needs_base_url)
    if adapter.needs_base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}.base_url", f"expected an http(s) URL, got {base_url!r}")
    options = _mapping(spec.get("options", {}), f"{path}.options")
    adapter.validate_options(options, f"{path}.options")
    price_id = options.get("price_provider")
    return ProviderConfig(
        name=name,
        type=kind,
        base_url=base_url.rstrip("/"),
        api_key=_str(spec.get("api_key", ""), f"{path}.api_key", allow_empty=True),
        options=MappingProxyType(dict(options)),
        price_id=str(price_id) if price_id else adapter.default_price_id,
    )


def _tier(name: str, node: Any, providers: Mapping[str, ProviderConfig]) -> Tier:
    path = f"tiers.{name}"
    spec = _mapping(
        node,
        path,
        required={"targets"},
        optional={"description", "kind", "params", "max_tokens_cap", "fallback_tier", "policy", "prompt", "cache"},
    )
    kind = kinds.tier_kind(spec, path)
    tier_params = _params(spec.get("params", {}), f"{path}.params")
    tier_cap = _cap(spec.get("max_tokens_cap"), f"{path}.max_tokens_cap")
    raw_targets = spec["targets"]
    if not isinstance(raw_targets, list):
        raise ConfigError(f"{path}.targets", f"expected a list of targets, got {_kind(raw_targets)}")
    if not raw_targets:
        raise ConfigError(f"{path}.targets", "a tier needs at least one target")
    targets = tuple(
        _target(item, f"{path}.targets[{i}]", providers, tier_params, tier_cap) for i, item in enumerate(raw_targets)
    )
    for i, (item, target) in enumerate(zip(raw_targets, targets, strict=True)):
        kinds.check_target(item, target, f"{path}.targets[{i}]", providers[target.provider], kind)
    fallback = spec.get("fallback_tier")
    return Tier(
        name=name,
        targets=targets,
        description=_str(spec.get("description", ""), f"{path}.description", True),
        fallback_tier=None if fallback is None else _str(fallback, f"{path}.fallback_tier"),
        policy=MappingProxyType(policy_mod.parse_layer(spec.get("policy", {}), f"{path}.policy")),
        prompt=prompts.parse(spec["prompt"], f"{path}.prompt", name) if "prompt" in spec else None,
        cache=_cache(spec.get("cache"), f"{path}.cache"),
        kind=kind,
    )


def _target(
    node: Any, path: str, providers: Mapping[str, ProviderConfig], tier_params: Mapping[str, Any], tier_cap: int | None
) -> Target:
    if isinstance(node, str):
        # TensorZero-style shorthand: "provider::model".
        provider, sep, model = node.partition("::")
        if not sep or not model:
            raise ConfigError(path, f"expected 'provider::model' or a mapping, got {node!r}")
        spec: dict[str, Any] = {"provider": provider, "model": model}
    else:
        spec = _mapping(node, path, required={"provider"}, optional={"model", "params", "max_tokens_cap", "handler"})
    provider_name = _str(spec["provider"], f"{path}.provider")
    if provider_name not in providers:
        raise ConfigError(f"{path}.provider", f"{provider_name!r} is not a defined provider ({_defined(providers)})")
    handler = _handler(spec, path, providers[provider_name])
    if "model" not in spec and handler is None:
        raise ConfigError(f"{path}.model", "is required")
    params = {**tier_params, **_params(spec.get("params", {}), f"{path}.params")}
    cap = _cap(spec.get("max_tokens_cap"), f"{path}.max_tokens_cap")
    return Target(
        provider=provider_name,
        model=_str(spec.get("model", handler), f"{path}.model"),
        params=MappingProxyType(params),
        max_tokens_cap=_min_cap(cap, tier_cap),
        handler=handler,
    )


def _handler(spec: Mapping[str, Any], path: str, provider: ProviderConfig) -> str | None:
    """A local target's handler, imported now so a typo fails at load, not on the first request."""
    if not provider_class(provider.type).runs_handlers:
        if "handler" in spec:
            raise ConfigError(f"{path}.handler", "only targets on a 'local' provider take a handler")
        return None
    if "handler" not in spec:
        raise ConfigError(f"{path}.handler", "is required for a target on a 'local' provider")
    handler = _str(spec["handler"], f"{path}.handler")
    try:
        load_handler(handler)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{path}.handler", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the module itself failed while importing (its own bug)
        raise ConfigError(f"{path}.handler", f"importing it failed: {type(exc).__name__}: {exc}") from None
    return handler


def _task(name: str, node: Any, tiers: Mapping[str, Tier], providers: Mapping[str, ProviderConfig]) -> Task:
    path = f"tasks.{name}"
    if isinstance(node, str):
        node = {"tier": node}  # shorthand: `title_generation: small`
    spec = _mapping(
        node,
        path,
        required={"tier"},
        optional={"baseline", "params", "max_tokens_cap", "allow_models", "description", "policy", "prompts", "cache"},
    )
    tier = _str(spec["tier"], f"{path}.tier")
    if tier not in tiers:
        raise ConfigError(f"{path}.tier", f"{tier!r} is not a defined tier ({_defined(tiers)})")
    kind = tiers[tier].kind
    kinds.check_task(spec, path, kind)
    # The baseline prices the same tokens on another tier: one of the same kind (an embedding task's own).
    default_baseline = "frontier" if "frontier" in tiers and tiers["frontier"].kind == kind else tier
    baseline = _str(spec.get("baseline", default_baseline), f"{path}.baseline")
    if baseline not in tiers:
        raise ConfigError(f"{path}.baseline", f"{baseline!r} is not a defined tier ({_defined(tiers)})")
    if tiers[baseline].kind != kind:
        raise ConfigError(
            f"{path}.baseline",
            f"{baseline!r} is {article(tiers[baseline].kind)} tier; {article(kind)} task's baseline is {article(kind)} tier",
        )
    allow = spec.get("allow_models", [])
    if not isinstance(allow, list) or not all(isinstance(m, str) and m for m in allow):
        raise ConfigError(f"{path}.allow_models", "expected a list of model names")
    for i, model in enumerate(allow):
        provider, sep, _ = model.partition("::")
        if sep and provider not in providers:
            raise ConfigError(
                f"{path}.allow_models[{i}]", f"{provider!r} is not a defined provider ({_defined(providers)})"
            )
        if sep and kind not in provider_class(providers[provider].type).kinds:
            raise ConfigError(f"{path}.allow_models[{i}]", f"provider {provider!r} serves no {kind} calls")
        if not sep and not any(model == t.model for tr in tiers.values() if tr.kind == kind for t in tr.targets):
            raise ConfigError(
                f"{path}.allow_models[{i}]",
                f"{model!r} is not a model of any {kind} tier (name such a tier's model, or use 'provider::model')",
            )
    return Task(
        name=name,
        tier=tier,
        baseline=baseline,
        params=MappingProxyType(_params(spec.get("params", {}), f"{path}.params")),
        max_tokens_cap=_cap(spec.get("max_tokens_cap"), f"{path}.max_tokens_cap"),
        allow_models=tuple(allow),
        description=_str(spec.get("description", ""), f"{path}.description", True),
        policy=MappingProxyType(policy_mod.parse_layer(spec.get("policy", {}), f"{path}.policy")),
        prompts=MappingProxyType(_task_prompts(spec.get("prompts", {}), f"{path}.prompts", name, tiers)),
        cache=_cache(spec.get("cache"), f"{path}.cache"),
        kind=kind,
    )


def _cache(node: Any, path: str) -> CachePolicy | None:
    if node is None:
        return None
    spec = _mapping(node, path, required={"ttl_s"}, optional={"nondeterministic"})
    ttl = spec["ttl_s"]
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ConfigError(f"{path}.ttl_s", f"expected seconds > 0, got {ttl!r}")
    loose = spec.get("nondeterministic", False)
    if not isinstance(loose, bool):
        raise ConfigError(f"{path}.nondeterministic", f"expected true or false, got {loose!r}")
    return CachePolicy(ttl_s=float(ttl), nondeterministic=loose)


def _task_prompts(node: Any, path: str, task: str, tiers: Mapping[str, Tier]) -> dict[str, PromptVariant]:
    out: dict[str, PromptVariant] = {}
    for tier, variant in _mapping(node, path).items():
        if tier not in tiers:
            raise ConfigError(f"{path}.{tier}", f"{tier!r} is not a defined tier ({_defined(tiers)})")
        out[tier] = prompts.parse(variant, f"{path}.{tier}", f"{task}@{tier}")
    return out


def _params(node: Any, path: str) -> dict[str, Any]:
    params = dict(_mapping(node, path))
    for key, value in params.items():
        if key in _RESERVED_PARAMS:
            raise ConfigError(f"{path}.{key}", "is set by tiergate and cannot be a param")
        if key in ("max_tokens", "max_completion_tokens"):
            _cap(value, f"{path}.{key}")
        elif key in ("temperature", "top_p") and (
            not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 2
        ):
            raise ConfigError(f"{path}.{key}", f"expected a number between 0 and 2, got {value!r}")
    if "max_completion_tokens" in params:
        # One spelling inside tiergate; each provider writes the field name its API wants.
        params["max_tokens"] = params.pop("max_completion_tokens")
    return params


def _cap(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(path, f"expected a positive integer, got {value!r}")
    return value


def _min_cap(a: int | None, b: int | None) -> int | None:
    caps = [c for c in (a, b) if c is not None]
    return min(caps) if caps else None


def _mapping(
    node: Any, path: str, required: set[str] | None = None, optional: set[str] | None = None
) -> dict[str, Any]:
    """Check ``node`` is a mapping with string keys; with key sets given, reject unknown and missing keys."""
    if not isinstance(node, dict):
        raise ConfigError(path or "(top level)", f"expected a mapping, got {_kind(node)}")
    for key in node:
        if not isinstance(key, str):
            raise ConfigError(_join(path, str(key)), "keys must be strings")
    if required is not None or optional is not None:
        allowed = (required or set()) | (optional or set())
        for key in node:
            if key not in allowed:
                raise ConfigError(_join(path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required or ()):
            if key not in node:
                raise ConfigError(_join(path, key), "is required")
    return node


def _named(node: Any, path: str) -> list[tuple[str, Any]]:
    items = list(_mapping(node, path).items())
    for name, _ in items:
        if not _NAME.match(name):
            raise ConfigError(_join(path, name), "names may use letters, digits, '_', '-' and '.' only")
    return items


def _str(value: Any, path: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_kind(value)}")
    if not value and not allow_empty:
        raise ConfigError(path, "must not be empty")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _defined(names: Mapping[str, Any]) -> str:
    return "defined: " + ", ".join(names) if names else "none defined"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
