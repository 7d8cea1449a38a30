"""The ledger: one SQLite row per client request and per upstream attempt, written off the hot path.

``records`` holds the row shapes, ``schema`` the tables and their migrations, ``writer`` the bounded
queue drained in batches by one background task, ``store`` the file as the writer's thread sees it.
The read side: ``snapshot`` (one read transaction), ``runs`` (the rows summed in SQL by what the audit
counts by), ``tally`` (an audit line from runs), ``ranks`` (exact percentiles from index ranges),
``rollup`` (the days retention rolled up), ``audit`` (the workload audit), ``whatif`` (re-tiering on
paper), ``report`` (table, CSV and JSON output).
"""
