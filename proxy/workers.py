"""``tiergate serve --workers N``: N worker processes, each listening on its own socket (SO_REUSEPORT).

uvicorn's supervisor binds one socket and shares it: every worker accepts from it, and a burst of
connections goes mostly to whichever worker wakes first (of 64 keep-alive connections opened at once,
splits of 52/12 or 64/0 were common). A client holding a few long-lived connections (an SDK's pool, a
load balancer's) then keeps one worker busy while the other idles. With a socket per worker the kernel
spreads new connections over them by a hash of their addresses (bench/README.md, "Workers").

The supervisor starts the workers (``spawn``); each builds its app from the ``TIERGATE_*`` variables
(``proxy.app:app_from_env``). SIGINT and SIGTERM stop them gracefully (uvicorn's own shutdown in each).
A worker that dies is replaced, unless it died before serving (a start-up failure: every replacement
would fail the same way), which stops them all. SIGHUP is passed on to every worker, each of which
reloads rules.yaml in place (``proxy.reload``). Unlike uvicorn's supervisor it does not ping workers,
restart them, or resize on SIGTTIN/SIGTTOU. A worker that dies drops the connections still
waiting in its socket's queue (the kernel resets them); those it had accepted are its own anyway.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Mapping
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger("tiergate")

APP = "proxy.app:app_from_env"
STARTUP_FAILURE = 3  # a worker's exit code when it never served (uvicorn's own value)
_POLL_S = 0.5  # how often the supervisor looks for a stop request between worker exits
_STOP_GRACE_S = 40.0  # a worker's graceful shutdown (timeout_graceful_shutdown, 30 s) and its lifespan's close


def bound_port(host: str, port: int) -> int:
    """The port the workers will share (``port``, or a free one for 0), checked to be free right now.

    The check binds without SO_REUSEPORT, so it fails when anything listens there already, another
    tiergate included: joining its socket group would silently split its traffic with it.
    """
    with socket.socket(_family(host)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound: int = probe.getsockname()[1]
        return bound


def listener(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` in the port's SO_REUSEPORT group; uvicorn makes it listen."""
    sock = socket.socket(_family(host))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _family(host: str) -> socket.AddressFamily:
    # As uvicorn picks it for the socket its workers share: an address with a colon is IPv6.
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def run(options: Mapping[str, Any], workers: int) -> int:
    """Serve with ``workers`` processes until SIGINT or SIGTERM; return the exit code.

    ``options`` are ``uvicorn.Config``'s (host and port included); the workers read their settings from
    the environment, which the caller has filled in.
    """
    options = {**options, "port": bound_port(options["host"], options["port"])}
    context = multiprocessing.get_context("spawn")
    stop: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    processes: list[BaseProcess] = []

    def reload(signum: int, frame: FrameType | None) -> None:
        # Every worker re-reads rules.yaml itself (proxy.reload): the supervisor only passes the word on.
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)

    def start() -> BaseProcess:
        process = context.Process(target=serve_worker, args=(dict(options),), name="tiergate-worker")
        process.start()
        return process

    processes.extend(start() for _ in range(workers))
    log.info("tiergate: %d workers on %s:%d", workers, options["host"], options["port"])
    try:
        while not stop:
            multiprocessing.connection.wait([p.sentinel for p in processes], timeout=_POLL_S)
            for index, process in enumerate(processes):
                if stop or process.exitcode is None:
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("a worker failed to start (its log says why); stopping")
                    return 1
                log.warning("worker %s exited with code %s; starting another", process.pid, process.exitcode)
                processes[index] = start()
        return 0
    finally:
        _stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(_STOP_GRACE_S)
        if process.is_alive():
            log.warning("worker %s did not stop in %.0f s; killing it", process.pid, _STOP_GRACE_S)
            process.kill()
            process.join()


def serve_worker(options: dict[str, Any]) -> None:
    """One worker process: its own socket in the group, the app built from the environment."""
    import uvicorn

    try:
        sock = listener(options["host"], options["port"])
    except OSError as exc:
        log.error("a worker cannot listen on %s:%s: %s", options["host"], options["port"], exc)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(uvicorn.Config(APP, factory=True, **options))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)
