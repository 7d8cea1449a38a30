"""The ledger as the audit reads it: one read-only connection, one read transaction.

The audit reads the ledger in several statements (a scan, then the index ranges percentiles and the
what-if need) while ``tiergate serve`` keeps writing. In WAL mode one read transaction sees one snapshot
of the file throughout, so those statements agree with each other: counts taken from the scan still
hold when the ranges are read.

A ledger from before some of today's columns (a file nothing has migrated yet: the audit opens it
read-only) is read through a temporary view that adds them as NULL, so it still audits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from proxy.ledger.records import REQUEST_COLUMNS
from proxy.ledger.schema import open_readonly


class AuditError(ValueError):
    """A user mistake or an unreadable ledger: one line for the CLI, exit code 2."""


@contextmanager
def snapshot(path: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the ledger at ``path`` inside one read transaction; SQLite errors become
    ``AuditError`` (one line)."""
    if not Path(path).is_file():
        raise AuditError(f"no ledger at {path} (tiergate serve writes one; pass --db or set TIERGATE_DB)")
    try:
        conn = open_readonly(path)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    try:
        conn.execute("BEGIN")  # deferred: the snapshot is taken by the first read
        _add_missing_columns(conn)
        yield conn
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the ledger {path}: {exc}") from None
    finally:
        conn.close()


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    have = {str(row[1]) for row in conn.execute("PRAGMA main.table_info(requests)")}
    missing = [column for column in REQUEST_COLUMNS if column not in have]
    if have and missing:
        # Unqualified names look in the temp schema first: this view stands in for the old table.
        extra = ", ".join(f"NULL AS {column}" for column in missing)
        conn.execute(f"CREATE TEMP VIEW requests AS SELECT *, {extra} FROM main.requests")
