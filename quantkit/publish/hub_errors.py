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


def _transport_errors() -> tuple[type[BaseException], ...]:
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
    """Where the push is, for the error message: `now` says what it was doing, to which repo/branch."""

    def __init__(self, variant: Path, repo: str, revision: str, endpoint: str):
        self.variant, self.repo, self.revision, self.endpoint = variant, repo, revision, endpoint
        self.now = f"connecting to {repo}"
        self.committing = False


@contextmanager
def hub_errors(stage: Stage) -> Iterator[None]:
    """Turn whatever huggingface_hub or the network raises inside into one HubError line."""
    target = f"{stage.repo}@{stage.revision}"
    try:
        yield
    except QuantkitError:
        raise
    except OfflineModeIsEnabled:
        raise offline_error(stage.repo) from None
    except GatedRepoError as e:
        raise HubError(f"{stage.repo}: gated repository; this token has no access ({_server(e)})") from None
    except RepositoryNotFoundError as e:
        raise HubError(f"{stage.repo}: repository not found or not visible to this token while {stage.now} "
                       f"({_status(e)}); check --repo and that the token can see it") from None
    except RevisionNotFoundError as e:
        raise HubError(f"{target}: branch not found while {stage.now} ({_status(e)}); re-run the push") from None
    except HfHubHTTPError as e:
        raise HubError(_http_message(e, stage)) from None
    except ValueError as e:
        if "metadata" in str(e).lower():  # huggingface_hub's _validate_yaml answer
            raise HubError(f"{stage.repo}: the Hub rejected the model card's metadata: {one_line(e)}; "
                           f"run `quantkit package {stage.variant}` again") from None
        raise
    except _transport_errors() as e:
        what = (f"the commit may not have landed: re-run the same command (it does nothing if {target} "
                "already holds the variant)" if stage.committing else
                "nothing was committed: check the connection and HF_ENDPOINT, then re-run")
        raise HubError(f"network failure while {stage.now} at {stage.endpoint} "
                       f"({e.__class__.__name__}: {one_line(e, 120) or 'no answer'}); {what}") from None


def _status(e) -> str:
    r = getattr(e, "response", None)
    return f"HTTP {r.status_code}" if r is not None else e.__class__.__name__


def _server(e) -> str:
    msg = getattr(e, "server_message", None) or str(e).strip().splitlines()[0]
    return one_line(msg, 160)


def _http_message(e, stage: Stage) -> str:
    code = e.response.status_code if getattr(e, "response", None) is not None else None
    nothing = "" if stage.committing else "; nothing was committed"
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


__all__ = ["Stage", "hub_errors", "offline_error", "one_line"]
