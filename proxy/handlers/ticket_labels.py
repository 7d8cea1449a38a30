"""Support-ticket labels from a keyword table: the ``classification`` task's first target.

Most tickets name their topic in so many words ("refund", "invoice", "crash", "please add"). The
table answers those with no model call at all; a ticket that matches no label, or more than one
equally, is declined (``None``) and goes to the small tier. The label set is the one the demo and
the golden set use: bug, billing, feature.
"""

from __future__ import annotations

import re
from typing import Any

LABELS: dict[str, tuple[str, ...]] = {
    "billing": ("invoice", "refund", "charge", "charged", "billing", "payment", "subscription", "receipt", "price"),
    "bug": ("crash", "crashes", "error", "broken", "blank", "fails", "failing", "exception", "bug", "doesn't work"),
    "feature": ("please add", "feature", "would be nice", "could you add", "support for", "wish", "request"),
}


def classify(request: dict[str, Any]) -> str | None:
    """The label of the last user message, or ``None`` when the table cannot tell."""
    text = _last_user_text(request.get("messages") or []).lower()
    scores = {label: sum(_count(text, kw) for kw in keywords) for label, keywords in LABELS.items()}
    best = max(scores.values())
    if best == 0:
        return None
    winners = [label for label, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else None


def _count(text: str, keyword: str) -> int:
    return len(re.findall(r"\b" + re.escape(keyword) + r"\b", text))


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
