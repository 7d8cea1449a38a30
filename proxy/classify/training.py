"""``tiergate classifier train``: the ledger's header-tagged calls -> a model file, and how good it is.

Every production call an app tagged with ``X-Task-Type`` is a labelled example of that task, from that
app's own call sites: the rows with ``task_source = 'header'``, their hashed ``features`` (failed calls
too: the label is the header's, not the answer's), eval traffic left out. Training refuses, in one line,
when a task has fewer than ``min_examples`` of them or fewer than two tasks have any.

The features were hashed with the feature key of the server that wrote them (``TIERGATE_FEATURE_KEY``);
training reads them with this process's key, so it must be the same. A row hashed under another key
is recognised (it lacks every id ``features.marker_ids`` expects) and left out: after a key change only
traffic logged since counts, and the model has to wait for enough of it.

Rows of tasks the registry no longer has are left out too (and said): a model that could pick them
would be refused at load.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from proxy.classify.features import decode, marker_ids
from proxy.classify.model import Example, ModelError, train
from proxy.ledger.audit import AuditError
from proxy.ledger.schema import open_readonly
from proxy.ledger.sums import ISO_TS
from proxy.registry import CHAT, Registry

# The ``requests`` view's ts and features, read from its tables: a bound and an order on ``r.ts`` (epoch
# ms) are ranges of the ts index, which the view's ISO ts is not (schema v9).
_LABELLED = (
    f"SELECT {ISO_TS}, k.task, CASE WHEN r.template IS NULL THEN r.features"
    " ELSE CAST(t.features || x'8000' || ifnull(r.features, x'') AS BLOB) END"
    " FROM ledger_requests AS r JOIN ledger_kinds AS k ON k.id = r.kind"
    " LEFT JOIN ledger_templates AS t ON t.id = r.template"
    " WHERE k.task_source = 'header' AND (r.features IS NOT NULL OR r.template IS NOT NULL)"
    " AND r.eval_run IS NULL{since} ORDER BY r.ts"
)


class TrainingError(ValueError):
    """Not enough (or no usable) labelled traffic to train on: one line saying what is missing."""


@dataclass(frozen=True)
class Labelled:
    """What the ledger holds to train on."""

    examples: list[Example]  # (task, feature ids) of the usable rows, oldest first
    rows: int  # header-tagged rows with features read
    left_out: Mapping[str, int]  # tasks the registry does not have -> their rows
    foreign: int  # rows hashed under another feature key
    first_ts: str | None
    last_ts: str | None


def read_labelled(db: str, seed: int, tasks: Sequence[str], since: int | None = None) -> Labelled:
    """The header-tagged rows of ``db`` at or after ``since`` (a ledger ts, epoch ms) whose features ``seed``
    reads."""
    if not Path(db).is_file():
        raise AuditError(f"no ledger at {db} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    sql = _LABELLED.format(since=" AND r.ts >= ?" if since is not None else "")
    markers, known = marker_ids(seed), set(tasks)
    examples: list[Example] = []
    left_out: Counter[str] = Counter()
    rows = foreign = 0
    first = last = None
    try:
        conn = open_readonly(db)
        try:
            for ts, task, blob in conn.execute(sql, () if since is None else (since,)):
                rows += 1
                first, last = first or ts, ts
                if task not in known:
                    left_out[task] += 1
                    continue
                ids = array("l", decode(blob))  # a fraction of a list's memory over a large ledger
                if markers.isdisjoint(ids):
                    foreign += 1
                    continue
                examples.append((task, ids))
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc) or "no such table" in str(exc):
            # Read as it is (no migration): a ledger before v8's tables is brought forward by any
            # ``tiergate audit`` or ``tiergate serve`` on it.
            raise AuditError(
                f"the ledger {db} predates schema v8: run `tiergate audit --db {db}` once to migrate it"
            ) from None
        raise AuditError(f"cannot read the ledger {db}: {exc}") from None
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {db}: {exc}") from None
    return Labelled(examples, rows, dict(left_out), foreign, first, last)


@dataclass(frozen=True)
class TrainingReport:
    """What ``tiergate classifier train`` did: the k-fold evaluation of the model it wrote to ``out``."""

    examples: int
    tasks: tuple[str, ...]
    accuracy: float
    folds: int
    per_task: Mapping[str, Mapping[str, float]]  # task -> examples, precision, recall
    confusion: Mapping[str, Mapping[str, int]]  # true task -> predicted task -> count
    temperature: float
    out: str
    untrained: tuple[str, ...]  # registry tasks with no tagged traffic: the model never picks them
    left_out: Mapping[str, int]
    foreign: int
    since: str | None
    first_ts: str | None
    last_ts: str | None


def train_from_ledger(
    db: str,
    registry: Registry,
    seed: int,
    out: str,
    *,
    since: int | None = None,
    since_text: str | None = None,
    min_examples: int = 20,
    folds: int = 5,
    now: datetime | None = None,
) -> TrainingReport:
    """Train on ``db``'s labelled rows, write the model to ``out`` (atomically) and report its evaluation.

    ``since`` bounds the rows (a ledger ts, ``audit.parse_since``); ``since_text`` is what the user
    wrote, for the model's meta. Raises ``TrainingError`` (and writes nothing) when the data cannot
    make a model.
    """
    if min_examples < 1:
        raise TrainingError(f"--min-examples: expected 1 or more, got {min_examples}")
    if folds < 2:
        raise TrainingError(f"--folds: expected 2 or more, got {folds}")
    data = read_labelled(db, seed, list(registry.tasks), since)
    counts = Counter(task for task, _ in data.examples)
    _check_enough(data, counts, min_examples)
    try:
        model, evaluation = train(data.examples, seed, folds=folds)
    except ModelError as exc:
        raise TrainingError(str(exc)) from None
    trained_at = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    meta = {
        "trained_at": trained_at,
        "rows": len(data.examples),
        "since": since_text,
        "from": data.first_ts,
        "to": data.last_ts,
        "registry": registry.source,
        "registry_hash": registry.content_hash,
        "folds": evaluation.folds,
        "accuracy": evaluation.accuracy,
    }
    write_atomically(out, replace(model, meta=meta).to_json())
    return TrainingReport(
        examples=len(data.examples),
        tasks=model.tasks,
        accuracy=evaluation.accuracy,
        folds=evaluation.folds,
        per_task=evaluation.per_task,
        confusion=evaluation.confusion,
        temperature=evaluation.temperature,
        out=out,
        # The classifier places chat calls only: an embedding task is never one it should have learnt.
        untrained=tuple(t for t in registry.tasks_of(CHAT) if t not in counts),
        left_out=data.left_out,
        foreign=data.foreign,
        since=since_text,
        first_ts=data.first_ts,
        last_ts=data.last_ts,
    )


def _check_enough(data: Labelled, counts: Mapping[str, int], min_examples: int) -> None:
    if data.rows == 0:
        raise TrainingError(
            "no header-tagged calls with features in the ledger for that period (tag calls with X-Task-Type "
            "and let them run through tiergate first)"
        )
    if not data.examples:
        if data.foreign:
            raise TrainingError(
                f"none of the ledger's {data.foreign:,} header-tagged calls was hashed with this process's "
                "feature key (TIERGATE_FEATURE_KEY changed?): train with the key the server used, or wait for "
                "traffic logged under the new one"
            )
        raise TrainingError(
            f"every header-tagged call is of a task the registry does not have: {_listing(data.left_out)}"
        )
    few = sorted((n, task) for task, n in counts.items() if n < min_examples)
    if few:
        named = ", ".join(f"{task} has {n}" for n, task in few)
        raise TrainingError(
            f"too few header-tagged examples to train (--min-examples {min_examples}): {named}; tag more of "
            "their calls, wait for more traffic, or lower --min-examples"
        )
    if len(counts) < 2:
        [(task, n)] = counts.items()
        raise TrainingError(
            f"training needs header-tagged calls of at least two tasks; the ledger has {n:,} of one ({task})"
        )


def _listing(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{task} ({n:,} calls)" for task, n in sorted(counts.items()))


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a server that reloads the model
    when the file changes never reads half of one. The file keeps the mode it had (a new one gets the
    umask's)."""
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise TrainingError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TrainingError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
