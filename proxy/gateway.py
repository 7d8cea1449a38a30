"""``Gateway``: the objects one process shares between requests, built once in the lifespan.

Endpoints reach it through ``request.state.gateway``; nothing lives at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.auth import ClientKeys
from proxy.cache.service import CacheService
from proxy.classify.decide import Classifier
from proxy.dispatch import Dispatcher
from proxy.ledger.writer import LedgerWriter
from proxy.providers.base import Provider
from proxy.registry import Registry
from proxy.router import Router
from proxy.settings import Settings
from proxy.telemetry.service import Telemetry
from proxy.upstream import UpstreamClient


@dataclass(frozen=True)
class Gateway:
    settings: Settings
    registry: Registry
    router: Router
    keys: ClientKeys
    http: UpstreamClient
    providers: Mapping[str, Provider]
    dispatcher: Dispatcher
    ledger: LedgerWriter | None
    classifier: Classifier
    cache: CacheService
    started: int  # epoch seconds: the ``created`` of the model objects
    metrics_keys: ClientKeys  # who may read GET /metrics: TIERGATE_METRICS_KEY, else the client keys
    telemetry: Telemetry | None = None  # None: no tracing and no metrics (the default)
