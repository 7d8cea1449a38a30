"""Which task an untagged call is: ``classify:`` rules from rules.yaml, then a classifier learned from the
team's own header-tagged traffic.

Resolution order: ``X-Task-Type`` (always wins) -> the first matching rule -> the learned classifier (when
configured and at least ``min_confidence`` sure) -> ``default_task``. ``conditions`` parses and evaluates
rules; ``features`` turns a request into the non-reversible features the ledger keeps and the model
reads; ``model`` trains and applies the classifier; ``decide`` puts them in that order.
"""
