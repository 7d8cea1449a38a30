"""The ledger's tables, versioned with ``PRAGMA user_version`` and migrated forward at open.

Each entry of ``MIGRATIONS`` takes the database from version i to i+1. Migrations run inside
``BEGIN IMMEDIATE`` and re-read the version there, so several workers opening the same file at once
migrate it exactly once. Columns are documented in the README (people write SQL against them).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("tiergate.ledger")

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
    # v7: a covering index for the audit, superseded by v8 (which reads the compact tables instead): nothing
    # to do; a file that has it loses it with its table in v8.
    """
    SELECT 1;
    """,
    # v8: the ledger at scale (issue 14). The same ``requests`` and ``attempts``, as views (same columns, same
    # meanings) over compact tables: times in whole ms, durations in whole µs, a row's repeated values
    # (task, tier, model, status, ...) once per distinct combination in ``ledger_kinds``, end users and eval
    # runs once each in ``ledger_names``, a call site's features once in ``ledger_templates`` (a row keeps
    # only what its user message adds), a request's only attempt in its own row when it served it,
    # tiergate's own request ids derived from the row id and OpenAI's as 16 bytes, overhead_ms derived,
    # no index on random ids. ``daily``: rollups of the rows retention deletes. Existing rows are copied
    # over as they were (features not split, every attempt a row of its own).
    """
    CREATE TABLE ledger_kinds (
        id              INTEGER PRIMARY KEY,
        task            TEXT NOT NULL,
        task_source     TEXT NOT NULL,
        tier            TEXT,
        requested_model TEXT,
        model           TEXT,
        provider        TEXT,
        status          INTEGER NOT NULL,
        error_type      TEXT,
        stream          INTEGER NOT NULL,
        usage_source    TEXT NOT NULL,
        baseline_tier   TEXT,
        baseline_model  TEXT,
        price_source    TEXT,
        fallback        INTEGER NOT NULL,
        client          TEXT,
        prompt_variant  TEXT,
        task_predicted  TEXT,
        cache           TEXT,
        registry        TEXT
    );
    CREATE UNIQUE INDEX ledger_kinds_key ON ledger_kinds (
        task, task_source, ifnull(tier, x''), ifnull(requested_model, x''), ifnull(model, x''),
        ifnull(provider, x''), status, ifnull(error_type, x''), stream, usage_source, ifnull(baseline_tier, x''),
        ifnull(baseline_model, x''), ifnull(price_source, x''), fallback, ifnull(client, x''),
        ifnull(prompt_variant, x''), ifnull(task_predicted, x''), ifnull(cache, x''), ifnull(registry, x'')
    );
    CREATE TABLE ledger_names (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE
    );
    CREATE TABLE ledger_templates (
        id          INTEGER PRIMARY KEY,
        digest      BLOB NOT NULL UNIQUE,
        features    BLOB NOT NULL
    );
    CREATE TABLE ledger_hops (
        id          INTEGER PRIMARY KEY,
        tier        TEXT,
        provider    TEXT NOT NULL,
        model       TEXT NOT NULL,
        status      INTEGER,
        error_type  TEXT
    );
    CREATE UNIQUE INDEX ledger_hops_key ON ledger_hops (
        ifnull(tier, x''), provider, model, ifnull(status, x''), ifnull(error_type, x'')
    );
    CREATE TABLE ledger_requests (
        rid                INTEGER PRIMARY KEY AUTOINCREMENT,
        id                 TEXT NOT NULL,
        ts                 INTEGER NOT NULL,
        kind               INTEGER NOT NULL,
        request_id,
        prompt_tokens      INTEGER,
        completion_tokens  INTEGER,
        cached_tokens      INTEGER,
        cache_write_tokens INTEGER,
        reasoning_tokens   INTEGER,
        cost_usd           REAL,
        baseline_cost_usd  REAL,
        latency_us         INTEGER,
        ttft_us            INTEGER,
        upstream_us        INTEGER,
        attempts           INTEGER NOT NULL,
        end_user           INTEGER,
        eval_run           INTEGER,
        task_confidence    REAL,
        template           INTEGER,
        features           BLOB,
        cost_avoided_usd   REAL,
        prompt_text        TEXT,
        attempt_ended      INTEGER,
        attempt_us         INTEGER
    );
    CREATE INDEX ledger_requests_ts ON ledger_requests (strftime('%Y-%m-%dT%H:%M:%fZ', ts / 1000.0, 'unixepoch'));
    CREATE INDEX ledger_requests_eval_run ON ledger_requests (eval_run) WHERE eval_run IS NOT NULL;
    CREATE TABLE ledger_attempts (
        id          INTEGER PRIMARY KEY,
        request     INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        ended       INTEGER NOT NULL,
        hop         INTEGER NOT NULL,
        latency_us  INTEGER
    );
    CREATE INDEX ledger_attempts_request ON ledger_attempts (request);
    CREATE TABLE daily (
        day                 TEXT NOT NULL,
        task                TEXT NOT NULL,
        tier                TEXT NOT NULL,
        provider            TEXT NOT NULL,
        model               TEXT NOT NULL,
        eval                INTEGER NOT NULL,
        calls               INTEGER NOT NULL,
        errors              INTEGER NOT NULL,
        disconnects         INTEGER NOT NULL,
        fallbacks           INTEGER NOT NULL,
        estimated           INTEGER NOT NULL,
        unpriced            INTEGER NOT NULL,
        cached              INTEGER NOT NULL,
        prompt_tokens       INTEGER NOT NULL,
        completion_tokens   INTEGER NOT NULL,
        cost_usd            REAL,
        baseline_cost_usd   REAL,
        savings_usd         REAL,
        cache_saved_usd     REAL,
        PRIMARY KEY (day, task, tier, provider, model, eval)
    );
    CREATE TABLE ledger_meta (
        key     TEXT PRIMARY KEY,
        value   INTEGER NOT NULL
    );
    -- The audit's runs, summed as rows arrive (proxy.ledger.materialize): every ledger_requests row with a
    -- rid up to ledger_meta 'runs_through' is in here, once, per UTC day, kind and eval run (0: none).
    CREATE TABLE ledger_runs (
        day                 INTEGER NOT NULL,
        kind                INTEGER NOT NULL,
        eval_run            INTEGER NOT NULL,
        calls               INTEGER NOT NULL,
        latencies           INTEGER NOT NULL,
        prompt_tokens       INTEGER NOT NULL,
        completion_tokens   INTEGER NOT NULL,
        cost_usd            REAL NOT NULL,
        priced              INTEGER NOT NULL,
        baseline_cost_usd   REAL NOT NULL,
        baselined           INTEGER NOT NULL,
        cost_avoided_usd    REAL NOT NULL,
        avoided             INTEGER NOT NULL,
        confidence          REAL NOT NULL,
        confident           INTEGER NOT NULL,
        cached_tokens       INTEGER NOT NULL,
        cache_write_tokens  INTEGER NOT NULL,
        largest_prompt      INTEGER NOT NULL,
        odd                 INTEGER NOT NULL,
        sample              TEXT,
        PRIMARY KEY (day, kind, eval_run)
    ) WITHOUT ROWID;

    INSERT INTO ledger_kinds (task, task_source, tier, requested_model, model, provider, status, error_type, stream,
        usage_source, baseline_tier, baseline_model, price_source, fallback, client, prompt_variant, task_predicted,
        cache)
    SELECT DISTINCT task, task_source, tier, requested_model, model, provider, status, error_type, stream,
        usage_source, baseline_tier, baseline_model, price_source, fallback, client, prompt_variant, task_predicted,
        cache
    FROM requests;
    INSERT INTO ledger_names (name)
    SELECT end_user FROM requests WHERE end_user IS NOT NULL
    UNION SELECT eval_run FROM requests WHERE eval_run IS NOT NULL;
    INSERT INTO ledger_requests (rid, id, ts, kind, request_id, prompt_tokens, completion_tokens, cached_tokens,
        cache_write_tokens, reasoning_tokens, cost_usd, baseline_cost_usd, latency_us, ttft_us, upstream_us, attempts,
        end_user, eval_run, task_confidence, template, features, cost_avoided_usd, prompt_text)
    SELECT o.rowid, o.id, CAST(round((julianday(o.ts) - 2440587.5) * 86400000.0) AS INTEGER), k.id,
        CASE WHEN o.request_id IS NULL THEN 0 WHEN o.request_id = 'req_' || o.id THEN NULL
            WHEN o.request_id = 'gen_' || o.id THEN 1 ELSE o.request_id END,
        o.prompt_tokens, o.completion_tokens, o.cached_tokens, o.cache_write_tokens, o.reasoning_tokens, o.cost_usd,
        o.baseline_cost_usd, CAST(round(o.latency_ms * 1000) AS INTEGER), CAST(round(o.ttft_ms * 1000) AS INTEGER),
        CAST(round(o.upstream_ms * 1000) AS INTEGER), o.attempts, u.id, e.id, o.task_confidence, NULL, o.features,
        o.cost_avoided_usd, o.prompt_text
    FROM requests AS o
    JOIN ledger_kinds AS k ON k.task = o.task AND k.task_source = o.task_source
        AND ifnull(k.tier, x'') = ifnull(o.tier, x'') AND ifnull(k.requested_model, x'') = ifnull(o.requested_model, x'')
        AND ifnull(k.model, x'') = ifnull(o.model, x'') AND ifnull(k.provider, x'') = ifnull(o.provider, x'')
        AND k.status = o.status AND ifnull(k.error_type, x'') = ifnull(o.error_type, x'') AND k.stream = o.stream
        AND k.usage_source = o.usage_source AND ifnull(k.baseline_tier, x'') = ifnull(o.baseline_tier, x'')
        AND ifnull(k.baseline_model, x'') = ifnull(o.baseline_model, x'')
        AND ifnull(k.price_source, x'') = ifnull(o.price_source, x'') AND k.fallback = o.fallback
        AND ifnull(k.client, x'') = ifnull(o.client, x'') AND ifnull(k.prompt_variant, x'') = ifnull(o.prompt_variant, x'')
        AND ifnull(k.task_predicted, x'') = ifnull(o.task_predicted, x'') AND ifnull(k.cache, x'') = ifnull(o.cache, x'')
    LEFT JOIN ledger_names AS u ON u.name = o.end_user
    LEFT JOIN ledger_names AS e ON e.name = o.eval_run
    ORDER BY o.rowid;
    INSERT INTO ledger_hops (tier, provider, model, status, error_type)
    SELECT DISTINCT tier, provider, model, status, error_type FROM attempts;
    INSERT INTO ledger_attempts (id, request, n, ended, hop, latency_us)
    SELECT a.id, o.rowid, a.n,
        CAST(round((julianday(a.ts) - julianday(o.ts)) * 86400000.0) AS INTEGER), h.id,
        CAST(round(a.latency_ms * 1000) AS INTEGER)
    FROM attempts AS a
    JOIN requests AS o ON o.id = a.request
    JOIN ledger_hops AS h ON ifnull(h.tier, x'') = ifnull(a.tier, x'') AND h.provider = a.provider
        AND h.model = a.model AND ifnull(h.status, x'') = ifnull(a.status, x'')
        AND ifnull(h.error_type, x'') = ifnull(a.error_type, x'')
    ORDER BY a.id;
    DROP TABLE attempts;
    DROP TABLE requests;

    CREATE VIEW requests AS SELECT
        r.id AS id,
        strftime('%Y-%m-%dT%H:%M:%fZ', r.ts / 1000.0, 'unixepoch') AS ts,
        CASE typeof(r.request_id) WHEN 'null' THEN 'req_' || r.id
            WHEN 'integer' THEN CASE r.request_id WHEN 1 THEN 'gen_' || r.id END
            WHEN 'blob' THEN 'req_' || lower(hex(r.request_id))
            ELSE r.request_id END AS request_id,
        k.task AS task,
        k.task_source AS task_source,
        k.tier AS tier,
        k.requested_model AS requested_model,
        k.model AS model,
        k.provider AS provider,
        k.status AS status,
        k.error_type AS error_type,
        k.stream AS stream,
        r.prompt_tokens AS prompt_tokens,
        r.completion_tokens AS completion_tokens,
        r.cached_tokens AS cached_tokens,
        r.cache_write_tokens AS cache_write_tokens,
        r.reasoning_tokens AS reasoning_tokens,
        k.usage_source AS usage_source,
        r.cost_usd AS cost_usd,
        k.baseline_tier AS baseline_tier,
        k.baseline_model AS baseline_model,
        r.baseline_cost_usd AS baseline_cost_usd,
        k.price_source AS price_source,
        r.latency_us / 1000.0 AS latency_ms,
        r.ttft_us / 1000.0 AS ttft_ms,
        r.upstream_us / 1000.0 AS upstream_ms,
        max(r.latency_us - r.upstream_us, 0) / 1000.0 AS overhead_ms,
        r.attempts AS attempts,
        k.fallback AS fallback,
        k.client AS client,
        k.prompt_variant AS prompt_variant,
        u.name AS end_user,
        e.name AS eval_run,
        r.task_confidence AS task_confidence,
        k.task_predicted AS task_predicted,
        CASE WHEN r.template IS NULL THEN r.features
            ELSE CAST(t.features || x'8000' || ifnull(r.features, x'') AS BLOB) END AS features,
        r.prompt_text AS prompt_text,
        k.cache AS cache,
        r.cost_avoided_usd AS cost_avoided_usd,
        k.registry AS registry
    FROM ledger_requests AS r
    JOIN ledger_kinds AS k ON k.id = r.kind
    LEFT JOIN ledger_names AS u ON u.id = r.end_user
    LEFT JOIN ledger_names AS e ON e.id = r.eval_run
    LEFT JOIN ledger_templates AS t ON t.id = r.template;

    CREATE VIEW attempts AS SELECT
        a.id AS id,
        r.id AS request,
        a.n AS n,
        strftime('%Y-%m-%dT%H:%M:%fZ', (r.ts + a.ended) / 1000.0, 'unixepoch') AS ts,
        h.tier AS tier,
        h.provider AS provider,
        h.model AS model,
        h.status AS status,
        h.error_type AS error_type,
        a.latency_us / 1000.0 AS latency_ms
    FROM ledger_attempts AS a
    JOIN ledger_requests AS r ON r.rid = a.request
    JOIN ledger_hops AS h ON h.id = a.hop
    UNION ALL SELECT
        -r.rid,
        r.id,
        1,
        strftime('%Y-%m-%dT%H:%M:%fZ', (r.ts + r.attempt_ended) / 1000.0, 'unixepoch'),
        k.tier,
        k.provider,
        k.model,
        200,
        NULL,
        r.attempt_us / 1000.0
    FROM ledger_requests AS r
    JOIN ledger_kinds AS k ON k.id = r.kind
    WHERE r.attempt_ended IS NOT NULL;

    CREATE TRIGGER requests_insert INSTEAD OF INSERT ON requests BEGIN
        INSERT INTO ledger_kinds (task, task_source, tier, requested_model, model, provider, status, error_type,
            stream, usage_source, baseline_tier, baseline_model, price_source, fallback, client, prompt_variant,
            task_predicted, cache, registry)
        VALUES (NEW.task, NEW.task_source, NEW.tier, NEW.requested_model, NEW.model, NEW.provider, NEW.status,
            NEW.error_type, NEW.stream, NEW.usage_source, NEW.baseline_tier, NEW.baseline_model, NEW.price_source,
            NEW.fallback, NEW.client, NEW.prompt_variant, NEW.task_predicted, NEW.cache, NEW.registry)
        ON CONFLICT DO NOTHING;
        INSERT INTO ledger_names (name) SELECT NEW.end_user WHERE NEW.end_user IS NOT NULL ON CONFLICT DO NOTHING;
        INSERT INTO ledger_names (name) SELECT NEW.eval_run WHERE NEW.eval_run IS NOT NULL ON CONFLICT DO NOTHING;
        INSERT INTO ledger_requests (id, ts, kind, request_id, prompt_tokens, completion_tokens, cached_tokens,
            cache_write_tokens, reasoning_tokens, cost_usd, baseline_cost_usd, latency_us, ttft_us, upstream_us,
            attempts, end_user, eval_run, task_confidence, template, features, cost_avoided_usd, prompt_text)
        VALUES (NEW.id, CAST(round((julianday(NEW.ts) - 2440587.5) * 86400000.0) AS INTEGER),
            (SELECT id FROM ledger_kinds WHERE task = NEW.task AND task_source = NEW.task_source
                AND ifnull(tier, x'') = ifnull(NEW.tier, x'')
                AND ifnull(requested_model, x'') = ifnull(NEW.requested_model, x'')
                AND ifnull(model, x'') = ifnull(NEW.model, x'') AND ifnull(provider, x'') = ifnull(NEW.provider, x'')
                AND status = NEW.status AND ifnull(error_type, x'') = ifnull(NEW.error_type, x'')
                AND stream = NEW.stream AND usage_source = NEW.usage_source
                AND ifnull(baseline_tier, x'') = ifnull(NEW.baseline_tier, x'')
                AND ifnull(baseline_model, x'') = ifnull(NEW.baseline_model, x'')
                AND ifnull(price_source, x'') = ifnull(NEW.price_source, x'') AND fallback = NEW.fallback
                AND ifnull(client, x'') = ifnull(NEW.client, x'')
                AND ifnull(prompt_variant, x'') = ifnull(NEW.prompt_variant, x'')
                AND ifnull(task_predicted, x'') = ifnull(NEW.task_predicted, x'')
                AND ifnull(cache, x'') = ifnull(NEW.cache, x'') AND ifnull(registry, x'') = ifnull(NEW.registry, x'')),
            CASE WHEN NEW.request_id IS NULL THEN 0 WHEN NEW.request_id = 'req_' || NEW.id THEN NULL
                WHEN NEW.request_id = 'gen_' || NEW.id THEN 1 ELSE NEW.request_id END,
            NEW.prompt_tokens, NEW.completion_tokens, NEW.cached_tokens, NEW.cache_write_tokens, NEW.reasoning_tokens,
            NEW.cost_usd, NEW.baseline_cost_usd, CAST(round(NEW.latency_ms * 1000) AS INTEGER),
            CAST(round(NEW.ttft_ms * 1000) AS INTEGER), CAST(round(NEW.upstream_ms * 1000) AS INTEGER), NEW.attempts,
            (SELECT id FROM ledger_names WHERE name = NEW.end_user),
            (SELECT id FROM ledger_names WHERE name = NEW.eval_run), NEW.task_confidence, NULL, NEW.features,
            NEW.cost_avoided_usd, NEW.prompt_text);
    END;

    CREATE TRIGGER attempts_insert INSTEAD OF INSERT ON attempts BEGIN
        INSERT INTO ledger_hops (tier, provider, model, status, error_type)
        VALUES (NEW.tier, NEW.provider, NEW.model, NEW.status, NEW.error_type) ON CONFLICT DO NOTHING;
        INSERT INTO ledger_attempts (request, n, ended, hop, latency_us)
        SELECT r.rid, NEW.n, CAST(round((julianday(NEW.ts) - 2440587.5) * 86400000.0) AS INTEGER) - r.ts,
            (SELECT id FROM ledger_hops WHERE ifnull(tier, x'') = ifnull(NEW.tier, x'') AND provider = NEW.provider
                AND model = NEW.model AND ifnull(status, x'') = ifnull(NEW.status, x'')
                AND ifnull(error_type, x'') = ifnull(NEW.error_type, x'')),
            CAST(round(NEW.latency_ms * 1000) AS INTEGER)
        FROM (SELECT rid, ts FROM ledger_requests WHERE id = NEW.request ORDER BY rid DESC LIMIT 1) AS r;
    END;
    """,
    # v9: the ts index on the integer itself (issue 15). v8's indexed the ISO text the views show, so every
    # insert ran strftime and stored a 24-character key; whole ms order the rows as that text does, so the
    # readers bound and order by ``ts`` in ms instead (the views still show ISO text).
    """
    DROP INDEX ledger_requests_ts;
    CREATE INDEX ledger_requests_ts ON ledger_requests (ts);
    """,
)

VERSION = len(MIGRATIONS)
COMPACT = 8  # the version whose migration copied every row into the compact tables
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


def open_ledger(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the ledger; WAL so readers never block the writer.

    ``synchronous = NORMAL``: a committed transaction survives the process being killed (it is in the
    WAL file, which the next opener replays); only a power cut can lose the last few.
    ``check_same_thread=False`` for a caller that serialises its own use from several threads.
    """
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=check_same_thread)
    try:
        # Effective only on a file without tables yet: a new ledger gives the pages retention frees back
        # to the file system (PRAGMA incremental_vacuum, see proxy.ledger.prune).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        found = migrate(conn)
        if 0 < found < COMPACT and conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
            # A ledger from before v8 was copied into the compact tables: VACUUM once gives the old tables'
            # pages back and turns incremental vacuum on (it cannot be turned on otherwise).
            log.warning("ledger %s migrated to schema v%d: compacting the file once (VACUUM)", path, VERSION)
            conn.execute("VACUUM")
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
            for statement in statements(MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def statements(script: str) -> list[str]:
    """``script``'s statements one by one (a trigger's body holds semicolons of its own)."""
    found, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        found.append(pending.strip())
    return found


def open_readonly(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A read-only connection for the audit; fails clearly when the file does not exist."""
    conn = sqlite3.connect(
        Path(path).absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0, check_same_thread=check_same_thread
    )
    conn.row_factory = sqlite3.Row
    return conn
