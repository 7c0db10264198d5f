"""Bounded HTTP for a push: every Hub request gets a time limit, and reads are retried.

huggingface_hub's shared HTTP client sets no timeout on most API calls (`timeout=None` in its
client factory; only downloads honour HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT), so a Hub or a
proxy that accepts the connection and never answers hangs a push forever.

- `bounded_requests(timeout)`: while a push runs, every request huggingface_hub sends without a
  timeout of its own gets `timeout` seconds to connect (at most 10), to send each chunk and to wait
  for each chunk of the answer. The client factory is swapped through huggingface_hub's own hook
  (`set_client_factory`, hub >= 1.0; `configure_http_backend` before) and restored afterwards.
- `retrying(fn)`: an idempotent read (repo info, refs, tree, a download) is retried on a network
  failure, a timeout or a 5xx/429 answer, twice, after 0.5 s and 1 s. Writes are not retried here:
  a commit that may have landed is judged by re-reading the branch (pushing.py).

The limit: `PushOptions.timeout`, else the environment variable QUANTKIT_HUB_TIMEOUT, else 60 s.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError

from ..errors import UsageError
from .hub_errors import transport_errors

DEFAULT_TIMEOUT = 60.0
TIMEOUT_ENV = "QUANTKIT_HUB_TIMEOUT"
READ_RETRIES = 2
RETRY_WAIT = 0.5  # seconds before the first retry; doubled for each next one
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


def hub_timeout(explicit: float | None = None) -> float:
    """Seconds a Hub request may go without progress: `explicit`, else QUANTKIT_HUB_TIMEOUT, else 60."""
    what, value = ("timeout", explicit) if explicit is not None else (TIMEOUT_ENV, os.environ.get(TIMEOUT_ENV))
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{what}={value}: expected a positive number of seconds (default {DEFAULT_TIMEOUT:g})")
    return seconds


def _bounds(timeout: float) -> dict[str, float]:
    return {"connect": min(timeout, 10.0), "read": timeout, "write": timeout, "pool": timeout}


@contextmanager
def bounded_requests(timeout: float) -> Iterator[None]:
    """Inside, huggingface_hub's requests that set no timeout of their own get `timeout` seconds."""
    if hasattr(huggingface_hub, "set_client_factory"):
        with _bounded_httpx(timeout):
            yield
    elif hasattr(huggingface_hub, "configure_http_backend"):  # huggingface_hub < 1.0 (requests)
        with _bounded_requests_session(timeout):
            yield
    else:
        yield


@contextmanager
def _bounded_httpx(timeout: float) -> Iterator[None]:
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or _http.default_client_factory
    bounds = _bounds(timeout)

    def fill_timeouts(request) -> None:
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {k: given[k] if given.get(k) is not None else v for k, v in bounds.items()}

    def factory():
        client = previous()
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [*hooks.get("request", []), fill_timeouts]}
        return client

    huggingface_hub.set_client_factory(factory)
    try:
        yield
    finally:
        huggingface_hub.set_client_factory(previous)


@contextmanager
def _bounded_requests_session(timeout: float) -> Iterator[None]:
    from huggingface_hub.utils import _http

    import requests

    previous = getattr(_http, "_GLOBAL_BACKEND_FACTORY", None)
    bounds = _bounds(timeout)

    def factory():
        session = previous() if previous is not None else requests.Session()
        send = session.request

        def request(*args, **kwargs):
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = (bounds["connect"], bounds["read"])
            return send(*args, **kwargs)

        session.request = request
        return session

    huggingface_hub.configure_http_backend(backend_factory=factory)
    try:
        yield
    finally:
        if previous is not None:
            huggingface_hub.configure_http_backend(backend_factory=previous)


def retryable(e: BaseException) -> bool:
    """A failure after which the same read may succeed: network, timeout, 5xx or 429."""
    if isinstance(e, HfHubHTTPError):
        r = getattr(e, "response", None)
        return r is not None and r.status_code in RETRY_STATUS
    return isinstance(e, transport_errors())


def retrying(fn: Callable[[], T], retries: int = READ_RETRIES, wait: float = RETRY_WAIT) -> T:
    """`fn()` (an idempotent read, fully consumed inside), retried `retries` times on `retryable`."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == retries or not retryable(e):
                raise
        time.sleep(wait * 2**attempt)
    raise AssertionError("unreachable")


__all__ = ["DEFAULT_TIMEOUT", "READ_RETRIES", "TIMEOUT_ENV", "bounded_requests", "hub_timeout", "retryable",
           "retrying"]
