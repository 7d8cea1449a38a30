"""Per-task golden sets and the evals that say, with evidence, whether a tier is good enough for a task.

``golden`` reads and validates ``evals/<task>/`` (``eval.yaml`` + ``cases.jsonl``); ``scorers`` judges one
answer against one case. The runner sends the cases to tiergate itself, served in-process with the registry
under test, so an eval goes through exactly what production runs (routing, prompt variants, params,
retries, fallbacks, pricing, the ledger).
"""
