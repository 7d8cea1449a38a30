"""The ledger: one SQLite row per client request and per upstream attempt, written off the hot path.

``records`` holds the row shapes, ``schema`` the tables and their migrations, ``writer`` the bounded
queue drained in batches by one background task, ``store`` the file as the writer's thread sees it,
``audit`` the read side (workload audit, what-if), ``report`` its table, CSV and JSON output.
"""
