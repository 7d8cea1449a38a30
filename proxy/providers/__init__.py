"""Provider adapters: one small class per wire format, picked by the registry's ``type`` from a table.

Adding a provider type is a row in ``PROVIDER_TYPES`` and a sibling module; no provider name or branch
appears outside this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.providers.base import Provider

# type name -> "module:Class", imported on first use (as uvicorn picks its loop and protocol).
PROVIDER_TYPES: dict[str, str] = {
    "openai": "proxy.providers.openai_compat:OpenAICompatible",
    "anthropic": "proxy.providers.anthropic:Anthropic",
    "local": "proxy.providers.local:Local",
}


def provider_class(type_name: str) -> type[Provider]:
    """The adapter class registered for ``type_name``."""
    module_name, _, class_name = PROVIDER_TYPES[type_name].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls
