"""What a failed Hub call during a push becomes: one `HubError` line that names the repo, what the
push was doing, the HTTP status or network cause, and what to do (re-run, another token, --update)."""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import HubError, QuantkitError


def one_line(text: object, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def offline_error(repo: str) -> HubError:
    return HubError(f"HF_HUB_OFFLINE is set: pushing to {repo} needs the Hub; run with HF_HUB_OFFLINE=0")


def transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level exception classes of whichever HTTP client huggingface_hub uses."""
    out: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for mod, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                       ("requests", ("ConnectionError", "Timeout"))):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        out += [c for c in (getattr(m, n, None) for n in names) if isinstance(c, type)]
    return tuple(out)


class Stage:
    """Where the push is, for the error message: `now` says what it was doing, to which repo/branch;
    `timeout` is the limit a request had (hub_http.py)."""

    def __init__(self, variant: Path, repo: str, revision: str, endpoint: str, timeout: float | None = None):
        self.variant, self.repo, self.revision, self.endpoint = variant, repo, revision, endpoint
        self.timeout = timeout
        self.now = f"connecting to {repo}"
        self.committing = False


def _timed_out(e: BaseException) -> bool:
    return isinstance(e, TimeoutError) or any("Timeout" in c.__name__ for c in type(e).__mro__)


@contextmanager
def hub_errors(stage: Stage) -> Iterator[None]:
    """Turn whatever huggingface_hub or the network raises inside into one HubError line."""
    try:
        yield
    except QuantkitError:
        raise
    except Exception as e:
        err = _as_hub_error(e, stage)
        if err is None:
            raise
        raise err from None


def _as_hub_error(e: Exception, stage: Stage) -> HubError | None:
    """The one line for `e`; None for an exception that is not a Hub or network failure (a bug)."""
    target = f"{stage.repo}@{stage.revision}"
    if isinstance(e, OfflineModeIsEnabled):
        return offline_error(stage.repo)
    if isinstance(e, GatedRepoError):
        return HubError(f"{stage.repo}: gated repository; this token has no access ({_server(e)})")
    if isinstance(e, RepositoryNotFoundError):
        return HubError(f"{stage.repo}: repository not found or not visible to this token while {stage.now} "
                        f"({_status(e)}); check --repo and that the token can see it")
    if isinstance(e, RevisionNotFoundError):
        return HubError(f"{target}: branch not found while {stage.now} ({_status(e)}); re-run the push")
    if isinstance(e, HfHubHTTPError):
        return HubError(_http_message(e, stage))
    if isinstance(e, ValueError):
        if "metadata" in str(e).lower():  # huggingface_hub's _validate_yaml answer
            return HubError(f"{stage.repo}: the Hub rejected the model card's metadata: {one_line(e)}; "
                            f"run `quantkit package {stage.variant}` again")
        return None
    if isinstance(e, transport_errors()):
        landed = stage.committing and "/commit/" in _request_path(e)
        what = (f"the commit may not have landed: re-run the same command (it does nothing if {target} "
                "already holds the variant)" if landed or (stage.committing and not _request_path(e)) else
                "nothing was committed: check the connection and HF_ENDPOINT, then re-run")
        if _timed_out(e):
            limit = f" within {stage.timeout:g} s" if stage.timeout else ""
            return HubError(f"no answer from {stage.endpoint}{limit} while {stage.now} ({e.__class__.__name__}); "
                            f"{what} (QUANTKIT_HUB_TIMEOUT sets the limit in seconds)")
        return HubError(f"network failure while {stage.now} at {stage.endpoint} "
                        f"({e.__class__.__name__}: {one_line(e, 120) or 'no answer'}); {what}")
    if isinstance(e, RuntimeError) and isinstance(e.__cause__, Exception):
        # huggingface_hub wraps a failed LFS upload: "Error while uploading 'FILE' to the Hub." from the cause
        return _as_hub_error(e.__cause__, stage)
    return None


def _status(e) -> str:
    r = getattr(e, "response", None)
    return f"HTTP {r.status_code}" if r is not None else e.__class__.__name__


def _server(e) -> str:
    msg = getattr(e, "server_message", None) or str(e).strip().splitlines()[0]
    return one_line(msg, 160)


def _request_path(e) -> str:
    """The URL of the request that failed ("" when the exception does not carry it)."""
    for get in (lambda: e.request.url, lambda: e.response.request.url):
        try:
            return str(get())
        except Exception:  # noqa: BLE001 - no request attached: try the next way, else no path to tell
            continue
    return ""


def _http_message(e, stage: Stage) -> str:
    code = e.response.status_code if getattr(e, "response", None) is not None else None
    # while committing, only the commit call itself can have changed the branch (not preupload or LFS)
    nothing = "" if stage.committing and "/commit/" in _request_path(e) else "; nothing was committed"
    if code == 401:
        return (f"the Hub rejected the token (401 while {stage.now}: {_server(e)}); set HF_TOKEN to a valid write "
                "token or run `hf auth login`")
    if code == 403:
        return (f"permission denied (403) while {stage.now}: this token cannot write to "
                f"{stage.repo.split('/')[0]} ({_server(e)}); use a write token of that namespace or push elsewhere")
    if code == 409:
        return f"conflict (409) while {stage.now}: {_server(e)}; re-run the push"
    if code == 412:
        return (f"the branch moved while {stage.now} (someone pushed meanwhile; 412); nothing was committed: "
                "re-run the push")
    if code is not None and code >= 500:
        return f"the Hub failed while {stage.now} (HTTP {code}: {_server(e)}){nothing}; retry later"
    return f"the Hub refused while {stage.now} (HTTP {code}: {_server(e)}){nothing}"


__all__ = ["Stage", "hub_errors", "offline_error", "one_line", "transport_errors"]
