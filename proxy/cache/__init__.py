"""Generation off the request path: key-addressed precomputed answers, stale-while-revalidate, an exact cache.

``plan`` decides, per request, whether a stored answer may serve it and under which key (a client's
``X-Tiergate-Key``, or the exact request as sent upstream); ``store`` keeps answers (SQLite with a memory
front, behind a small interface); ``answer`` turns streams into completions and back; ``flight`` makes
identical concurrent misses one upstream call; ``generator`` runs background generations with a bounded
queue and a concurrency limit. The chat and precompute endpoints put them together.
"""
