"""``tiergate`` subcommands. Each one parses its options and calls one function.

Every ``serve`` flag is also an environment variable ``TIERGATE_<FLAG>``; a flag wins over the
variable. A user mistake (bad rules.yaml, bad flag value) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from proxy import logs, rules
from proxy.errors import ConfigError
from proxy.registry import Registry
from proxy.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage mistake (already said in one line)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        return result
    except ConfigError as exc:
        print(f"tiergate: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"tiergate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (``tiergate: ...``) and exit code 2, like every other."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tiergate: {self.prog.removeprefix('tiergate').strip() or 'usage'}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tiergate", description="Route each LLM call to the tier its task needs.")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="registry file (TIERGATE_CONFIG, default rules.yaml)")
    serve.add_argument("--host", help="bind address (TIERGATE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (TIERGATE_PORT, default 4000)")
    serve.add_argument("--db", help="ledger SQLite file (TIERGATE_DB, default tiergate.db)")
    serve.add_argument("--no-ledger", dest="ledger", action="store_const", const=False, help="do not write the ledger")
    serve.add_argument("--transport", help="upstream HTTP transport: aiohttp or httpcore (TIERGATE_TRANSPORT)")
    serve.add_argument("--log-level", help="debug, info, warning, error (TIERGATE_LOG_LEVEL)")
    serve.add_argument(
        "--workers", type=int, help="worker processes sharing the port and the ledger (TIERGATE_WORKERS, default 1)"
    )
    serve.add_argument(
        "--max-body-mb", type=int, help="largest request or answer body, MiB (TIERGATE_MAX_BODY_MB, default 32)"
    )
    serve.add_argument(
        "--max-event-mb", type=int, help="largest upstream stream event, MiB (TIERGATE_MAX_EVENT_MB, default 8)"
    )
    serve.add_argument(
        "--head-timeout-s", type=float, help="seconds for a request head to arrive (TIERGATE_HEAD_TIMEOUT_S, 10)"
    )
    serve.add_argument(
        "--max-connections", type=int, help="open client connections at most (TIERGATE_MAX_CONNECTIONS, 0: auto)"
    )
    serve.add_argument(
        "--allow-unauthenticated",
        dest="allow_unauthenticated",
        action="store_const",
        const=True,
        help="serve a non-loopback address without client keys (TIERGATE_ALLOW_UNAUTHENTICATED)",
    )
    serve.set_defaults(run=_serve)

    check = sub.add_parser("check", help="validate a registry file with the server's own validator, and evals/")
    check.add_argument("config", nargs="?", default="rules.yaml")
    check.add_argument(
        "--evals", metavar="DIR", help="golden sets to validate against the registry (default: ./evals, if it exists)"
    )
    check.set_defaults(run=_check)

    demo = sub.add_parser("demo", help="run a sample workload against an embedded fake upstream (no keys needed)")
    demo.add_argument("--config", default="rules.yaml", help="registry file to demo (default rules.yaml)")
    demo.add_argument(
        "--calls",
        type=int,
        default=None,
        help="calls of the generated workload whose bill the demo ends with (default 600; 0: none)",
    )
    demo.set_defaults(run=_demo)

    fake = sub.add_parser(
        "fake-upstream",
        help="run the fake OpenAI and Anthropic upstreams (no keys, no network) for tiergate serve to call",
        description="The fake OpenAI-compatible API under /openai/v1 and the fake Anthropic Messages API under "
        "/anthropic, on one port; examples/rules.fake.yaml points tiergate at them.",
    )
    fake.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    fake.add_argument("--port", type=int, default=4001, help="port (default 4001; 0 picks a free one)")
    fake.set_defaults(run=_fake_upstream)

    audit = sub.add_parser("audit", help="calls, tokens, cost and savings from the ledger; --what-if re-prices it")
    audit.add_argument("--db", help="ledger SQLite file (TIERGATE_DB, default tiergate.db)")
    audit.add_argument("--since", help="only requests since 24h, 90m, 7d ago, a date (2026-11-01) or a timestamp")
    audit.add_argument("--until", help="only requests before 24h, 90m, 7d ago, a date (its midnight) or a timestamp")
    audit.add_argument(
        "--by", help="group by task (default), tier, model, provider, day, registry (its content hash) or client"
    )
    audit.add_argument("--task", action="append", default=[], help="only this task's calls (repeatable)")
    audit.add_argument(
        "--model", action="append", default=[], help="only this model's calls: gpt-5.5 or openai::gpt-5.5 (repeatable)"
    )
    audit.add_argument("--format", default="table", help="table (default), csv or json")
    audit.add_argument("--what-if", metavar="CANDIDATE_YAML", help="price the same traffic under another registry")
    audit.add_argument(
        "--recommend",
        action="store_true",
        help="the re-tierings the evals support (a cheaper tier whose golden set passed), with their savings",
    )
    audit.add_argument("--config", help="the registry --recommend re-tiers (TIERGATE_CONFIG, default rules.yaml)")
    audit.add_argument(
        "--include-eval",
        action="store_true",
        help="count eval traffic too (tiergate eval's calls, left out by default)",
    )
    audit.add_argument(
        "--classifier",
        action="store_true",
        help="the classifier's live agreement with the header on tagged traffic, per task and per day or week "
        "(--by day|week), and how calls were decided",
    )
    audit.set_defaults(run=_audit)

    pre = sub.add_parser("precompute", help="post a batch of generations (one JSON request per line) to tiergate")
    pre.add_argument("file", help="JSONL: {key, version, task, body, headers} per line ('-' reads stdin)")
    pre.add_argument("--url", help="tiergate's address (default http://TIERGATE_HOST:TIERGATE_PORT)")
    pre.add_argument("--api-key", help="a client key of tiergate's (default $TIERGATE_CLIENT_KEY)")
    pre.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    pre.add_argument("--wait", action="store_true", help="then follow every key until it is ready or failed")
    pre.set_defaults(run=_precompute)

    classifier = sub.add_parser("classifier", help="the classifier learned from header-tagged traffic")
    classifier_sub = classifier.add_subparsers(dest="classifier_command")
    train = classifier_sub.add_parser(
        "train",
        help="train it on the ledger's header-tagged calls; report k-fold accuracy; write the model file",
        epilog="The ledger keeps hashed features, hashed with the server's TIERGATE_FEATURE_KEY: train with the "
        "same key. After the key changes, only traffic logged since counts (older rows are left out and said).",
    )
    train.add_argument("--db", help="ledger SQLite file (TIERGATE_DB, default tiergate.db)")
    train.add_argument("--config", help="registry file (TIERGATE_CONFIG, default rules.yaml)")
    train.add_argument("--since", help="only calls since 24h, 90m, 7d ago, a date (2026-11-01) or a timestamp")
    train.add_argument("--out", default="classifier.json", help="model file to write (default classifier.json)")
    train.add_argument(
        "--min-examples", type=int, default=20, help="refuse when a task has fewer tagged calls (default 20)"
    )
    train.add_argument("--folds", type=int, default=5, help="folds of the cross-validation (default 5)")
    train.add_argument("--format", default="table", help="table (default) or json")
    train.set_defaults(run=_classifier_train)
    classifier.set_defaults(run=lambda args: _usage(classifier))

    ledger = sub.add_parser("ledger", help="the ledger file: retention")
    ledger_sub = ledger.add_subparsers(dest="ledger_command")
    prune = ledger_sub.add_parser(
        "prune",
        help="roll every whole day older than --older-than up into daily, delete its rows, give the space back",
        epilog="Safe while tiergate serves the same file: rows go in small batches, each rolled up into daily in "
        "the transaction that deletes it. rules.yaml's ledger: {retain_days: N} has the server do the same.",
    )
    prune.add_argument("--older-than", required=True, metavar="AGE", help="90d or 12w: the days kept")
    prune.add_argument("--db", help="ledger SQLite file (TIERGATE_DB, default tiergate.db)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be pruned; change nothing")
    prune.set_defaults(run=_ledger_prune)
    ledger.set_defaults(run=lambda args: _usage(ledger))

    classify = sub.add_parser("classify", help="explain which task, tier and targets one request would get, and why")
    classify.add_argument("request", metavar="REQUEST.json", help="a chat completions request body; - for stdin")
    classify.add_argument("--config", help="registry file (TIERGATE_CONFIG, default rules.yaml)")
    classify.add_argument(
        "--header", action="append", default=[], metavar="K:V", help="a request header, e.g. X-Task-Type:summary"
    )
    classify.add_argument("--format", default="table", help="table (default) or json")
    classify.set_defaults(run=_classify)

    ev = sub.add_parser("eval", help="run a task's golden set on a tier or model, side by side with its current tier")
    ev.add_argument("task", nargs="?", help="the task whose golden set (EVALS/TASK/) to run")
    ev.add_argument("--config", help="registry file (TIERGATE_CONFIG, default rules.yaml)")
    ev.add_argument("--evals", default="evals", help="folder of golden sets (default evals)")
    ev.add_argument("--db", help="ledger SQLite file for the answer store and the results (TIERGATE_DB)")
    ev.add_argument("--tier", help="the candidate: the task on this tier (default: its current tier)")
    ev.add_argument("--model", help="the candidate: the task on this one model, provider::model")
    ev.add_argument("--concurrency", type=int, default=4, help="cases in flight at once (default 4)")
    ev.add_argument("--limit", type=int, help="only the first N cases")
    ev.add_argument("--repeats", type=int, help="runs of each case, passed by majority (default: the set's)")
    ev.add_argument("--fresh", action="store_true", help="make every call again instead of reusing stored answers")
    ev.add_argument("--format", default="table", help="table (default) or json")
    ev.add_argument(
        "--gate",
        metavar="CANDIDATE_YAML",
        help="evaluate every task CANDIDATE_YAML changes against --config; exit 1 if any fails (CI)",
    )
    ev.set_defaults(run=_eval)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.connections import PROTOCOL, raise_fd_limit
    from proxy.providers import provider_class
    from proxy.telemetry.config import TelemetryConfig
    from proxy.upstream import check_transport

    settings = Settings.from_env(
        config=args.config,
        host=args.host,
        port=args.port,
        db=args.db,
        ledger=args.ledger,
        transport=args.transport,
        log_level=args.log_level,
        workers=args.workers,
        max_body_mb=args.max_body_mb,
        max_event_mb=args.max_event_mb,
        head_timeout_s=args.head_timeout_s,
        max_connections=args.max_connections,
        allow_unauthenticated=args.allow_unauthenticated,
        tune_runtime=True,
    )
    check_transport(settings.transport)
    _refuse_open_relay(settings)
    registry = rules.load(settings.config)  # fail fast, with one line, before any worker starts
    TelemetryConfig.from_env(os.environ)  # so do the OTEL_* variables
    logs.configure(settings.log_level)
    # Before the connection bound is derived from it (in each worker's lifespan: they inherit it).
    soft, hard = raise_fd_limit()
    logging.getLogger("tiergate").debug("open files: soft limit %d, hard limit %d", soft, hard)
    for name, provider in registry.providers.items():
        if provider_class(provider.type).needs_base_url and not provider.api_key:
            logging.getLogger("tiergate").warning(
                "provider %s has an empty API key: its upstream will refuse every call (set its key variable)", name
            )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # tiergate logs one access line per request itself (proxy.access), with the task and model
        "access_log": False,
        "http": PROTOCOL,
        # Let in-flight streams finish on SIGTERM before the lifespan closes the upstream client.
        "timeout_graceful_shutdown": 30,
    }
    if settings.workers > 1:
        from proxy import workers

        # Worker processes build their own app from the environment: hand them these settings.
        os.environ.update(settings.to_env())
        return workers.run(options, settings.workers)
    uvicorn.run(create_app(settings, registry), **options)  # type: ignore[arg-type]
    return 0


def _refuse_open_relay(settings: Settings) -> None:
    """Anyone who reaches an unauthenticated non-loopback port spends the team's provider keys."""
    if settings.api_keys or settings.allow_unauthenticated or _is_loopback(settings.host):
        return
    raise ValueError(
        f"refusing to serve on {settings.host} without client keys: anyone who can reach the port would spend "
        "the provider keys. Set TIERGATE_API_KEYS (comma-separated keys clients must send), or pass "
        "--allow-unauthenticated if something in front of tiergate authenticates."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve anywhere


def _check(args: argparse.Namespace) -> int:
    registry = rules.load(args.config)
    targets = sum(len(t.targets) for t in registry.tiers.values())
    print(
        f"{args.config}: ok — {len(registry.tasks)} tasks, {len(registry.tiers)} tiers, {targets} targets, "
        f"{len(registry.providers)} providers; default task {registry.default_task!r}"
        + (
            f", default embedding task {registry.default_embedding_task!r}"
            if registry.default_embedding_task is not None
            else ""
        )
        + (f"; {_plural(len(registry.classify), 'classify rule')}" if registry.classify else "")
    )
    from proxy.classify.conditions import dead_rules

    for dead in dead_rules(registry.classify):
        print(f"warning: {dead.describe()}", file=sys.stderr)
    from proxy.kinds import mixed_embedding_models

    for mixed in mixed_embedding_models(registry):
        print(f"warning: {mixed}", file=sys.stderr)
    _check_evals(args.evals, registry)
    return 0


def _check_evals(folder: str | None, registry: Registry) -> None:
    """The golden sets under ``folder`` (default ``./evals``), validated against the registry's tasks."""
    from proxy.evals import golden

    root = Path(folder or "evals")
    if folder is None and not root.is_dir():
        return  # no golden sets here: nothing to say
    if not root.is_dir():
        raise ConfigError(f"--evals {folder}", "no such folder")
    sets = golden.load_all(root, registry)
    cases = sum(len(g.cases) for g in sets.values())
    print(f"{folder or 'evals'}: ok — {_plural(len(sets), 'golden set')}, {_plural(cases, 'case')}")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo import bill, run_demo

    calls = bill.DEFAULT_CALLS if args.calls is None else args.calls
    if calls < 0:
        raise ValueError(f"--calls: expected 0 or more, got {calls}")
    return asyncio.run(run_demo(args.config, out=sys.stdout, calls=calls))


def _fake_upstream(args: argparse.Namespace) -> int:
    from proxy.fakes import upstreams
    from proxy.loopback import ServerStartError

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: expected 0 to 65535, got {args.port}")
    try:
        asyncio.run(upstreams.run(args.host, args.port, sys.stdout))
    except ServerStartError:
        raise ValueError(
            f"cannot listen on {args.host}:{args.port} (in use, or not an address of this machine)"
        ) from None
    return 0


def _audit(args: argparse.Namespace) -> int:
    from proxy.ledger.report import report

    # The audit counts and names unpriced calls itself; the pricer's per-model warning would only repeat it.
    logging.getLogger("tiergate.pricing").setLevel(logging.ERROR)
    env = Settings.from_env()
    db = args.db or env.db
    if args.recommend:
        from proxy.evals.recommend import recommend, render

        if args.what_if or args.by:
            raise ValueError("--recommend prices each supported re-tiering itself: drop --what-if and --by")
        registry = rules.load(args.config or env.config)
        print(render(recommend(db, registry, since=args.since, until=args.until), args.format), end="")
        return 0
    if args.classifier:
        return _audit_classifier(args, db)
    candidate = rules.load(args.what_if) if args.what_if else None
    text = report(
        db,
        since=args.since,
        by=args.by,
        fmt=args.format,
        candidate=candidate,
        include_eval=args.include_eval,
        until=args.until,
        tasks=args.task,
        models=args.model,
    )
    print(text, end="")
    return 0


def _precompute(args: argparse.Namespace) -> int:
    from proxy.cache import batch

    if args.concurrency < 1:
        raise ValueError(f"--concurrency: expected 1 or more, got {args.concurrency}")
    env = Settings.from_env()
    url = (args.url or f"http://{env.host}:{env.port}").rstrip("/")
    try:
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as source:  # noqa: SIM115
            jobs, bad = batch.parse(iter(source))
    except OSError as exc:
        raise ValueError(f"cannot read {args.file}: {exc.strerror}") from None
    key = args.api_key or os.environ.get("TIERGATE_CLIENT_KEY")
    outcome = asyncio.run(batch.run(jobs, url, key, concurrency=args.concurrency, wait=args.wait, progress=sys.stderr))
    outcome.refused = sorted(bad + outcome.refused)
    print(batch.summary(outcome, len(jobs) + len(bad), url, waited=args.wait), end="")
    return 0 if outcome.ok else 1


def _ledger_prune(args: argparse.Namespace) -> int:
    from proxy.ledger import prune

    days = prune.parse_age(args.older_than)
    db = args.db or Settings.from_env().db
    if not Path(db).is_file():
        raise ValueError(f"no ledger at {db} (pass --db or set TIERGATE_DB)")
    print(prune.describe(prune.prune(db, days, dry_run=args.dry_run)), end="")
    return 0


def _audit_classifier(args: argparse.Namespace, db: str) -> int:
    from proxy.classify import agreement
    from proxy.classify import report as classify_report
    from proxy.ledger.audit import Scope, parse_since

    if args.what_if or args.recommend:
        raise ValueError("--classifier reports the classifier alone: drop --what-if and --recommend")
    classify_report.check_format(args.format)
    scope = Scope(parse_since(args.since), args.include_eval, parse_since(args.until, flag="--until"))
    print(classify_report.agreement(agreement.summarize(db, scope, args.by or "day"), args.format), end="")
    return 0


def _classifier_train(args: argparse.Namespace) -> int:
    from proxy.classify import report as classify_report
    from proxy.classify.features import seed_of
    from proxy.classify.training import train_from_ledger
    from proxy.ledger.audit import parse_since

    classify_report.check_format(args.format)
    env = Settings.from_env()
    registry = _registry_to_train_for(args.config or env.config)
    result = train_from_ledger(
        args.db or env.db,
        registry,
        seed_of(env.feature_key),  # the key the server hashed the ledger's features with
        args.out,
        since=parse_since(args.since),
        since_text=args.since,
        min_examples=args.min_examples,
        folds=args.folds,
    )
    print(classify_report.training(result, args.format), end="")
    return 0


def _registry_to_train_for(path: str) -> Registry:
    """The registry, even when its ``classifier.model`` is missing or names tasks it no longer has: that
    model is what training replaces. Its content hash stays the file's own."""
    try:
        return rules.load(path)
    except ConfigError as exc:
        if exc.path != "classifier.model":
            raise
    import dataclasses
    import hashlib

    import yaml

    from proxy import yamldoc

    text = Path(path).read_text(encoding="utf-8")
    doc = yamldoc.load(text, path)
    doc.pop("classifier")
    registry = rules.loads(yaml.safe_dump(doc, sort_keys=False), source=path)
    return dataclasses.replace(registry, content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest())


def _classify(args: argparse.Namespace) -> int:
    from proxy.classify import report as classify_report
    from proxy.classify.explain import explain, parse_headers, read_request
    from proxy.classify.features import seed_of
    from proxy.errors import InvalidRequest

    classify_report.check_format(args.format)
    env = Settings.from_env()
    registry = rules.load(args.config or env.config)
    body, headers = read_request(args.request), parse_headers(args.header)
    try:
        result = explain(registry, body, headers, seed_of(env.feature_key))
    except InvalidRequest as exc:  # an unknown X-Task-Type, or a task of another endpoint
        raise ValueError(f"{exc.message} (the server answers 400)") from None
    print(classify_report.explanation(result, args.format), end="")
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _eval(args: argparse.Namespace) -> int:
    from proxy.evals.command import run_eval, run_gate

    # The report gives every failed call's reason and counts unpriced calls: the in-process server's
    # per-request warnings would only repeat them, through the progress bar.
    env = Settings.from_env()
    quiet = logging.getLogger("tiergate")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    common = {
        "config": args.config or env.config,
        "evals": args.evals,
        "db": args.db or env.db,
        "concurrency": args.concurrency,
        "limit": args.limit,
        "repeats": args.repeats,
        "fresh": args.fresh,
        "fmt": args.format,
    }
    try:
        if args.gate is not None:
            if args.task or args.tier or args.model:
                raise ValueError("--gate evaluates every changed task on the candidate: no TASK, --tier or --model")
            code, text = run_gate(args.gate, **common)
        else:
            code, text = run_eval(args.task, tier=args.tier, model=args.model, **common)
    finally:
        quiet.setLevel(level)
    print(text, end="")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
