"""The ledger's tables, versioned with ``PRAGMA user_version`` and migrated forward at open.

Each entry of ``MIGRATIONS`` takes the database from version i to i+1. Migrations run inside
``BEGIN IMMEDIATE`` and re-read the version there, so several workers opening the same file at once
migrate it exactly once. Columns are documented in the README (people write SQL against them).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE requests (
        id                 TEXT PRIMARY KEY,
        ts                 TEXT NOT NULL,
        request_id         TEXT,
        task               TEXT NOT NULL,
        task_source        TEXT NOT NULL,
        tier               TEXT,
        requested_model    TEXT,
        model              TEXT,
        provider           TEXT,
        status             INTEGER NOT NULL,
        error_type         TEXT,
        stream             INTEGER NOT NULL,
        prompt_tokens      INTEGER,
        completion_tokens  INTEGER,
        cached_tokens      INTEGER,
        cache_write_tokens INTEGER,
        reasoning_tokens   INTEGER,
        usage_source       TEXT NOT NULL,
        cost_usd           REAL,
        baseline_tier      TEXT,
        baseline_model     TEXT,
        baseline_cost_usd  REAL,
        price_source       TEXT,
        latency_ms         REAL,
        ttft_ms            REAL,
        upstream_ms        REAL,
        overhead_ms        REAL,
        attempts           INTEGER NOT NULL,
        fallback           INTEGER NOT NULL,
        client             TEXT
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_task_ts ON requests (task, ts);
    CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY,
        request     TEXT NOT NULL REFERENCES requests (id),
        n           INTEGER NOT NULL,
        ts          TEXT NOT NULL,
        tier        TEXT,
        provider    TEXT NOT NULL,
        model       TEXT NOT NULL,
        status      INTEGER,
        error_type  TEXT,
        latency_ms  REAL
    );
    CREATE UNIQUE INDEX attempts_request ON attempts (request, n);
    """,
    # v2: which prompt variant ran (providers issue)
    """
    ALTER TABLE requests ADD COLUMN prompt_variant TEXT;
    """,
    # v3: the request's own end-user id (``safety_identifier`` or ``user``), kept apart from ``client``,
    # which is now only ever the authenticated key's id (hardening issue)
    """
    ALTER TABLE requests ADD COLUMN end_user TEXT;
    """,
    # v4: evals (issue 11). ``requests.eval_run``: the eval run a call belonged to (NULL for production
    # traffic; the audit leaves those rows out by default). ``eval_runs``: one row per side (candidate,
    # current) of a ``tiergate eval`` run; ``eval_results``: one row per case per side; ``eval_answers``:
    # the answer store (answers reused by a re-run of an unchanged case on an unchanged target).
    """
    ALTER TABLE requests ADD COLUMN eval_run TEXT;
    CREATE INDEX requests_eval_run ON requests (eval_run) WHERE eval_run IS NOT NULL;
    CREATE TABLE eval_runs (
        id              INTEGER PRIMARY KEY,
        run             TEXT NOT NULL,
        side            TEXT NOT NULL,
        ts              TEXT NOT NULL,
        task            TEXT NOT NULL,
        tier            TEXT NOT NULL,
        targets         TEXT NOT NULL,
        current         INTEGER NOT NULL,
        registry_hash   TEXT NOT NULL,
        registry_source TEXT,
        golden_source   TEXT,
        threshold       REAL NOT NULL,
        max_regressions INTEGER,
        repeats         INTEGER NOT NULL,
        total           INTEGER NOT NULL,
        passed          INTEGER NOT NULL,
        pass_rate       REAL NOT NULL,
        ci_low          REAL NOT NULL,
        ci_high         REAL NOT NULL,
        regressions     INTEGER,
        flipped         INTEGER NOT NULL,
        verdict         TEXT NOT NULL,
        cost_usd        REAL,
        judge_cost_usd  REAL,
        unpriced        INTEGER NOT NULL,
        reused          INTEGER NOT NULL,
        answers         INTEGER NOT NULL,
        p50_ms          REAL,
        p95_ms          REAL
    );
    CREATE UNIQUE INDEX eval_runs_run_side ON eval_runs (run, side);
    CREATE INDEX eval_runs_task_ts ON eval_runs (task, ts);
    CREATE TABLE eval_results (
        id              INTEGER PRIMARY KEY,
        run             TEXT NOT NULL,
        side            TEXT NOT NULL,
        case_id         TEXT NOT NULL,
        passed          INTEGER NOT NULL,
        repeats_passed  INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        answer          TEXT NOT NULL,
        flipped         INTEGER NOT NULL,
        regression      INTEGER NOT NULL,
        latency_ms      REAL,
        cost_usd        REAL
    );
    CREATE UNIQUE INDEX eval_results_case ON eval_results (run, side, case_id);
    CREATE TABLE eval_answers (
        key             TEXT NOT NULL,
        repeat          INTEGER NOT NULL,
        ts              TEXT NOT NULL,
        target          TEXT NOT NULL,
        message         TEXT NOT NULL,
        usage           TEXT,
        latency_ms      REAL,
        PRIMARY KEY (key, repeat)
    );
    """,
    # v5: classification (issue 12). How the task was decided (``task_source`` gains ``rule:<name>`` and
    # ``classifier``), the classifier's probability when it decided, what it would have chosen for every
    # call (shadow mode), the request's hashed features (what training reads), and the raw system prompt
    # and last user message only when rules.yaml opts in (``classifier.capture_text``).
    """
    ALTER TABLE requests ADD COLUMN task_confidence REAL;
    ALTER TABLE requests ADD COLUMN task_predicted TEXT;
    ALTER TABLE requests ADD COLUMN features BLOB;
    ALTER TABLE requests ADD COLUMN prompt_text TEXT;
    """,
    # v6: generation off the request path (issue 13). ``requests.cache``: how the answer was found (hit,
    # stale, miss, coalesced; NULL for a call with no cache or key), ``cost_avoided_usd``: the price of the
    # original generation a cached answer stood in for. ``cache``: stored answers (exact cache and keyed
    # generations); ``generations``: where each keyed generation stands.
    """
    ALTER TABLE requests ADD COLUMN cache TEXT;
    ALTER TABLE requests ADD COLUMN cost_avoided_usd REAL;
    CREATE TABLE cache (
        key         TEXT PRIMARY KEY,
        version     TEXT,
        created     REAL NOT NULL,
        expires     REAL,
        size        INTEGER NOT NULL,
        answer      BLOB NOT NULL
    );
    CREATE INDEX cache_created ON cache (created);
    CREATE TABLE generations (
        key         TEXT PRIMARY KEY,
        version     TEXT,
        status      TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        error       TEXT
    );
    """,
    # v7: the audit aggregates in SQL (issue 14): one covering index it reads instead of the table. Its
    # key is the UTC day, then what the audit groups and counts by (eval traffic, task, tier, provider,
    # model, usage source, cache state, status, fallback, error), then latency_ms. So one GROUP BY over
    # that prefix streams in index order with no sort and serves every grouping (the groups are summed
    # in Python), --since is a range on the leading day, and within one group ("run", see
    # proxy.ledger.runs) latencies are sorted: an exact nearest-rank percentile only counts and reads
    # short index ranges. The columns the audit, the what-if and the classifier report read ride along.
    # Rows are inserted into today's part of the index only.
    """
    CREATE INDEX requests_audit ON requests (
        substr(ts, 1, 10), eval_run, task, tier, provider, model, usage_source, cache, status, fallback,
        error_type, latency_ms, prompt_tokens, completion_tokens, cost_usd, baseline_cost_usd, cost_avoided_usd,
        cached_tokens, cache_write_tokens, ts, task_source, task_predicted, task_confidence
    );
    """,
)

VERSION = len(MIGRATIONS)


def open_ledger(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the ledger; WAL so readers never block the writer.

    ``synchronous = NORMAL``: a committed transaction survives the process being killed (it is in the
    WAL file, which the next opener replays); only a power cut can lose the last few.
    ``check_same_thread=False`` for a caller that serialises its own use from several threads.
    """
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=check_same_thread)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to ``VERSION``; return the version found. Refuses a newer database."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("PRAGMA user_version").fetchone()
        found = int(row[0]) if row else 0
        if found > VERSION:
            raise sqlite3.DatabaseError(
                f"ledger schema version {found} is newer than this tiergate understands ({VERSION}); upgrade tiergate"
            )
        for version in range(found, VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def open_readonly(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A read-only connection for the audit; fails clearly when the file does not exist."""
    conn = sqlite3.connect(
        Path(path).absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0, check_same_thread=check_same_thread
    )
    conn.row_factory = sqlite3.Row
    return conn
