"""Local handlers: Python callables that answer a task without an LLM.

Some calls stop being LLM calls once their traffic is understood: a lookup table or a regex answers
them. A ``type: local`` provider runs such a callable, named in rules.yaml as
``handler: package.module:function``. The callable receives the chat request (the OpenAI body, as a
dict) and returns the answer text, a full assistant message dict, or ``None`` to decline (the next
target answers instead). It may be sync (keep it fast: it runs on the event loop) or async.
This package holds the handlers tiergate ships.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], Any]


def load_handler(spec: str) -> Handler:
    """Import ``package.module:function``; raises ImportError, AttributeError or ValueError."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"expected 'package.module:function', got {spec!r}")
    handler = getattr(importlib.import_module(module_name), name)
    if not callable(handler):
        raise ValueError(f"{spec} is not callable")
    fn: Handler = handler
    return fn
