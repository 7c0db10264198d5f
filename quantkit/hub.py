"""Push packaged variants to the Hugging Face Hub, and plan the publishing pipeline.

`push(PushOptions(variant, repo, revision))` goes through huggingface_hub's `HfApi` (token from
`HF_TOKEN` or the saved login, endpoint from `HF_ENDPOINT`):

  1. locally, before any request: every file's sha256 must match `quantkit.json` and the variant
     must have its card (`quantkit package`); the files pushed are exactly those the manifest lists,
     plus the manifest itself;
  2. `create_repo(exist_ok=True)`; the branch is created (from `main`) when it does not exist;
  3. the remote branch is compared with the variant: identical -> nothing to do (so a retry after
     a lost answer is safe); a branch that holds other content is refused unless `update` is set;
  4. ONE `create_commit` with every file (and, with `update`, deletions of files the variant no
     longer has), with `parent_commit` set to the head it compared against, so the branch moves
     from exactly the state that was checked to the new one, or not at all. If the commit fails on
     a branch this push created, the branch is deleted again (best effort).

Layouts:
  - one repo per variant: `--repo ORG/{name}` (default `--revision main`);
  - one repo, a branch per variant: `--repo ORG/NAME --revision auto` (the branch is the variant's
    name suffix, e.g. `GPTQ-Int4-g128`). `main` then gets a card listing the repo's variants,
    regenerated from every branch's `quantkit.json` after each push, so the Hub classifies the repo
    (its metadata says `base_model_relation: quantized`).

Every failure is a QuantkitError of one line: missing token, rejected token (401), no write access
(403), a branch holding different content, a branch that moved meanwhile (412), a network failure,
an error answer of the Hub.

`python -m quantkit.hub commands|matrix CONFIG` turns the publishing config (publish/variants.yaml)
into the shell commands `make publish` runs, or the CI matrix.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import QuantkitError
from .package import (CARD, VariantName, checked_manifest, expert_scheme, index_entry, packaged_card, read_card_metadata,
                      render_index_card, resolve_target, variant_name, _human)
from .variant import MANIFEST, sha256_file
from .version import QUANTKIT_VERSION

_KEEP_REMOTE = {".gitattributes"}  # files a branch may hold besides the variant's own


@dataclass
class PushOptions:
    variant: Path
    repo: str  # ORG/NAME; {name}, {base}, {suffix} are replaced from the variant's name
    revision: str = "main"  # a branch; "auto" = the variant's name suffix (branch-per-variant layout)
    private: bool = False  # when the repo is created
    dry_run: bool = False
    update: bool = False  # replace a branch that holds other content (a new commit on top of it)
    token: str | None = None  # default: HF_TOKEN, then the saved login
    endpoint: str | None = None  # default: HF_ENDPOINT, then huggingface.co


@dataclass
class PushFile:
    path: str
    local: Path
    size: int
    sha256: str


@dataclass
class PushPlan:
    variant: Path
    repo: str
    revision: str
    name: VariantName
    files: list[PushFile]
    message: str
    description: str
    endpoint: str
    private: bool
    card: dict  # the card's metadata

    @property
    def layout(self) -> str:
        return "repo" if self.revision == "main" else "branch"

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    def lines(self) -> list[str]:
        """The dry-run summary: exactly what a push would upload, and where."""
        out = [f"dry run: nothing is sent to {self.endpoint}",
               f"repo:    {self.repo} (created if missing, {'private' if self.private else 'public'})",
               f"branch:  {self.revision}" + ("" if self.revision == "main" else " (created from main if missing)"),
               f"layout:  {'one repo per variant' if self.layout == 'repo' else 'a branch per variant; main gets the card listing the variants'}",
               f"commit:  {self.message}",
               f"files:   {len(self.files)} files, {_human(self.total)} ({self.total} bytes)"]
        width = max(len(f"{f.size:,}") for f in self.files)
        out += [f"  {f.size:>{width},}  {f.sha256[:12]}  {f.path}" for f in self.files]
        if self.layout == "branch":
            out.append("then:    main/README.md is regenerated to list every variant branch of the repo")
        if "base_model" not in self.card:
            out.append("warning: the card names no base_model; the Hub will not list this as a quantization")
        return out


@dataclass
class PushResult:
    plan: PushPlan
    dry_run: bool = False
    commit: str | None = None
    commit_url: str | None = None
    unchanged: bool = False
    created_repo: bool = False
    created_branch: bool = False
    deleted: list[str] = field(default_factory=list)
    index_commit: str | None = None

    def lines(self) -> list[str]:
        if self.dry_run:
            return self.plan.lines()
        p = self.plan
        where = f"{p.repo}@{p.revision}"
        if self.unchanged:
            out = [f"{where} already holds {p.name.full} byte for byte (commit {self.commit}); nothing pushed"]
        else:
            out = [f"pushed {p.name.full} to {where}: {len(p.files)} files, {_human(p.total)}, one commit "
                   f"{self.commit}" + (f", {len(self.deleted)} stale files removed" if self.deleted else ""),
                   f"  {self.commit_url}"]
        if p.layout == "branch":
            out.append(f"main card listing the variants: {'updated, commit ' + self.index_commit if self.index_commit else 'already up to date'}")
        return out


# -- planning (local only) ------------------------------------------------------------------------

def default_endpoint() -> str:
    from huggingface_hub import constants
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def plan_push(opts: PushOptions) -> PushPlan:
    """Everything a push needs to know, checked locally: checksums, card, target, message."""
    variant = Path(opts.variant)
    manifest = checked_manifest(variant)
    card = packaged_card(variant, manifest)
    pkg = manifest["package"]
    name = VariantName(pkg["base"], pkg["suffix"]) if pkg.get("base") and pkg.get("suffix") else variant_name(manifest)
    repo, revision = resolve_target(opts.repo, opts.revision, name)
    if pkg.get("repo") and (pkg["repo"], pkg.get("revision") or "main") != (repo, revision):
        raise QuantkitError(f"{variant}: its card was written for {pkg['repo']}@{pkg.get('revision') or 'main'}, not "
                            f"{repo}@{revision}; run `quantkit package {variant} --repo {repo} --revision {revision}`")
    files = [PushFile(rel, variant / rel, int(v["size"]), v["sha256"]) for rel, v in sorted(manifest["files"].items())]
    files.append(PushFile(MANIFEST, variant / MANIFEST, (variant / MANIFEST).stat().st_size,
                          sha256_file(variant / MANIFEST)))
    files.sort(key=lambda f: f.path)
    bits = expert_scheme(manifest).bits
    message = f"Add {name.full} ({bits}-bit experts, quantkit {manifest.get('quantkit_version', QUANTKIT_VERSION)})"
    src = manifest.get("source") or {}
    description = (f"Made with quantkit from {card.get('base_model') or src.get('id')} "
                   f"(profile {(manifest.get('profile') or {}).get('name')}). {len(files)} files, "
                   f"{sum(f.size for f in files)} bytes; sha256 of every file in {MANIFEST} "
                   f"(its own sha256: {files[[f.path for f in files].index(MANIFEST)].sha256}).")
    return PushPlan(variant, repo, revision, name, files, message, description,
                    (opts.endpoint or default_endpoint()).rstrip("/"), opts.private, card)


# -- errors ----------------------------------------------------------------------------------------

def _one_line(text: object, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


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


class _Stage:
    """Where the push is, for the error message."""

    def __init__(self, plan: PushPlan):
        self.plan = plan
        self.now = "connecting"
        self.committing = False


@contextmanager
def _hub_errors(stage: _Stage) -> Iterator[None]:
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    p = stage.plan
    target = f"{p.repo}@{p.revision}"
    try:
        yield
    except QuantkitError:
        raise
    except OfflineModeIsEnabled:
        raise QuantkitError("HF_HUB_OFFLINE is set: pushing needs the Hub; run with HF_HUB_OFFLINE=0")
    except GatedRepoError as e:
        raise QuantkitError(f"{p.repo}: gated repository; this token has no access ({_server(e)})")
    except RepositoryNotFoundError as e:
        raise QuantkitError(f"{p.repo}: repository not found or not visible to this token while {stage.now} "
                            f"({_status(e)}); check --repo and that the token can see it")
    except RevisionNotFoundError as e:
        raise QuantkitError(f"{target}: branch not found while {stage.now} ({_status(e)}); re-run the push")
    except HfHubHTTPError as e:
        raise QuantkitError(_http_message(e, stage)) from None
    except ValueError as e:
        if "metadata" in str(e).lower():  # huggingface_hub's _validate_yaml answer
            raise QuantkitError(f"the Hub rejected the model card's metadata: {_one_line(e)}; "
                                f"run `quantkit package {p.variant}` again") from None
        raise
    except _transport_errors() as e:
        what = (f"the commit may not have landed: re-run the same command (it does nothing if {target} "
                "already holds the variant)" if stage.committing else
                "nothing was committed: check the connection and HF_ENDPOINT, then re-run")
        raise QuantkitError(f"network failure while {stage.now} at {p.endpoint} "
                            f"({e.__class__.__name__}: {_one_line(e, 120) or 'no answer'}); {what}") from None


def _status(e) -> str:
    r = getattr(e, "response", None)
    return f"HTTP {r.status_code}" if r is not None else e.__class__.__name__


def _server(e) -> str:
    msg = getattr(e, "server_message", None) or str(e).strip().splitlines()[0]
    return _one_line(msg, 160)


def _http_message(e, stage: _Stage) -> str:
    p = stage.plan
    code = e.response.status_code if getattr(e, "response", None) is not None else None
    nothing = "" if stage.committing else "; nothing was committed"
    if code == 401:
        return (f"the Hub rejected the token (401 while {stage.now}: {_server(e)}); set HF_TOKEN to a valid write "
                "token or run `hf auth login`")
    if code == 403:
        return (f"permission denied (403) while {stage.now} {p.repo}: this token cannot write to "
                f"{p.repo.split('/')[0]} ({_server(e)}); use a write token of that namespace or push elsewhere")
    if code == 409:
        return f"conflict (409) while {stage.now}: {_server(e)}; re-run the push"
    if code == 412:
        return (f"{p.repo}@{p.revision} moved while {stage.now} (someone pushed meanwhile; 412); nothing was "
                "committed: re-run the push")
    if code is not None and code >= 500:
        return f"the Hub failed while {stage.now} (HTTP {code}: {_server(e)}){nothing}; retry later"
    return f"the Hub refused while {stage.now} (HTTP {code}: {_server(e)}){nothing}"


# -- pushing ---------------------------------------------------------------------------------------

def _token(opts: PushOptions) -> str:
    if opts.token:
        return opts.token
    from huggingface_hub import get_token
    token = get_token()
    if not token:
        raise QuantkitError("no Hub token: set HF_TOKEN (a write token) or run `hf auth login`")
    return token


def _check_online() -> None:
    from huggingface_hub import constants
    if constants.is_offline_mode():
        raise QuantkitError("HF_HUB_OFFLINE is set: pushing needs the Hub; run with HF_HUB_OFFLINE=0")


def push(opts: PushOptions, log: Callable[[str], None] = lambda m: None) -> PushResult:
    plan = plan_push(opts)
    if opts.dry_run:
        return PushResult(plan, dry_run=True)
    token = _token(opts)
    _check_online()
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=plan.endpoint, token=token, library_name="quantkit", library_version=QUANTKIT_VERSION)
    stage = _Stage(plan)
    result = PushResult(plan)
    with _hub_errors(stage):
        stage.now = "creating the repo"
        try:  # look first: create_repo(exist_ok) on a repo it may not create builds a default-endpoint
            api.repo_info(plan.repo)  # URL that fails to parse under a custom HF_ENDPOINT (hub 2.4)
        except RepositoryNotFoundError:
            api.create_repo(plan.repo, private=True if plan.private else None, exist_ok=True)
            result.created_repo = True
        stage.now = "listing the branches of"
        branches = {b.name: b.target_commit for b in api.list_repo_refs(plan.repo).branches}
        if plan.revision not in branches:
            stage.now = "creating the branch in"
            api.create_branch(plan.repo, branch=plan.revision)
            result.created_branch = True
            branches = {b.name: b.target_commit for b in api.list_repo_refs(plan.repo).branches}
        head = branches[plan.revision]
        stage.now = "reading the branch of"
        remote = {f.path: f for f in api.list_repo_tree(plan.repo, revision=head, recursive=True)
                  if isinstance(f, RepoFile)}
        local = {f.path: f for f in plan.files}
        changed = [f for f in plan.files if not _same(f, remote.get(f.path))]
        extra = sorted(set(remote) - set(local) - _KEEP_REMOTE)
        if not changed and not extra:
            result.unchanged, result.commit = True, head
            result.commit_url = f"{plan.endpoint}/{plan.repo}/commit/{head}"
        else:
            fresh = set(remote) <= _KEEP_REMOTE | {CARD}
            if not (fresh or result.created_branch or opts.update):
                holds = "another variant" if MANIFEST in remote else "other files"
                differ = [f.path for f in changed if f.path in remote] + extra
                raise QuantkitError(f"{plan.repo}@{plan.revision} already holds {holds} ({len(differ)} files differ, "
                                    f"e.g. {differ[0] if differ else changed[0].path}); push to another --revision, "
                                    "or pass --update to replace it with a new commit")
            ops = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.local)) for f in changed]
            if not fresh:
                ops += [CommitOperationDelete(path_in_repo=p) for p in extra]
                result.deleted = extra
            verb = "Update" if (MANIFEST in remote and not result.created_branch) else "Add"
            stage.now, stage.committing = "committing to", True
            try:
                info = api.create_commit(plan.repo, ops, commit_message=verb + plan.message[3:],
                                         commit_description=plan.description, revision=plan.revision,
                                         parent_commit=head)
            except BaseException:
                if result.created_branch:
                    _rollback_branch(api, plan)
                raise
            stage.committing = False
            result.commit, result.commit_url = info.oid, info.commit_url
    if plan.layout == "branch":
        stage.now = "updating the card listing the variants on main of"
        try:
            with _hub_errors(stage):
                result.index_commit = update_index(api, plan, log)
        except QuantkitError as e:
            raise QuantkitError(f"{plan.name.full} is pushed to {plan.repo}@{plan.revision} (commit {result.commit}), "
                                f"but main's card was not updated: {e}; re-run the same push to retry it") from None
    return result


def _same(f: PushFile, remote) -> bool:
    """Whether the remote file has the local content: LFS files by sha256, others by git blob id."""
    if remote is None or remote.size != f.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == f.sha256
    return remote.blob_id == _git_blob_sha1(f.local, f.size)


def _git_blob_sha1(path: Path, size: int) -> str:
    import hashlib
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rollback_branch(api, plan: PushPlan) -> None:
    """Delete the branch this push created, so a failed push leaves the repo's branches as they were."""
    try:
        api.delete_branch(plan.repo, branch=plan.revision)
    except Exception:  # noqa: BLE001 - best effort; a retry copes with the empty branch
        pass


def update_index(api, plan: PushPlan, log: Callable[[str], None] = lambda m: None) -> str | None:
    """Regenerate main's README.md from every branch's quantkit.json; returns the commit or None
    when it is already current. Retries when main moves meanwhile (parallel pushes)."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

    with tempfile.TemporaryDirectory(prefix="quantkit-index-") as cache:
        for attempt in range(3):
            branches = {b.name: b.target_commit for b in api.list_repo_refs(plan.repo).branches}
            main = branches.get("main")
            main_files = {f.path for f in api.list_repo_tree(plan.repo, revision=main, recursive=True)
                          if isinstance(f, RepoFile)} if main else set()
            if MANIFEST in main_files:
                log(f"warning: {plan.repo}@main holds a variant itself; its card is left as it is")
                return None
            entries = []
            for name, oid in sorted(branches.items()):
                if name == "main":
                    continue
                try:
                    path = api.hf_hub_download(plan.repo, MANIFEST, revision=oid, cache_dir=cache)
                except EntryNotFoundError:
                    continue
                manifest = json.loads(Path(path).read_text())
                if manifest.get("package"):
                    entries.append(index_entry(name, manifest, oid))
            text = render_index_card(plan.repo, plan.card, entries)
            if CARD in main_files:
                current = Path(api.hf_hub_download(plan.repo, CARD, revision=main, cache_dir=cache)).read_text()
                if current == text:
                    return None
            try:
                info = api.create_commit(plan.repo, [CommitOperationAdd(CARD, text.encode())], revision="main",
                                         commit_message=f"Card listing {len(entries)} quantkit variants",
                                         parent_commit=main)
                return info.oid
            except HfHubHTTPError as e:
                if e.response is None or e.response.status_code != 412 or attempt == 2:
                    raise
    return None


# -- the publishing pipeline: config -> commands ----------------------------------------------------

_CONFIG_KEYS = {"model", "revision", "base_model", "license", "repo", "branch", "private", "calibration", "variants",
                "profile_command"}
_VARIANT_KEYS = {"id", "profile", "bits", "group_size", "method"}
DEFAULT_PROFILE_COMMAND = "quantkit profile {model} {variant} --out {report}"  # reference, variant


def load_publish_config(path: str | os.PathLike) -> dict:
    import yaml
    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise QuantkitError(f"{p}: unreadable publishing config ({_one_line(e, 120)})")
    if not isinstance(cfg, dict):
        raise QuantkitError(f"{p}: a publishing config is a mapping with `model`, `repo` and `variants`")
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise QuantkitError(f"{p}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_CONFIG_KEYS))}")
    for key in ("model", "repo", "variants"):
        if not cfg.get(key):
            raise QuantkitError(f"{p}: `{key}` is required")
    ids = []
    for i, v in enumerate(cfg["variants"]):
        if not isinstance(v, dict) or "profile" not in v:
            raise QuantkitError(f"{p}: variant {i + 1} needs a `profile`")
        bad = set(v) - _VARIANT_KEYS
        if bad:
            raise QuantkitError(f"{p}: variant {i + 1}: unknown key {sorted(bad)[0]!r}; allowed: "
                                f"{', '.join(sorted(_VARIANT_KEYS))}")
        v.setdefault("id", v["profile"])
        ids.append(v["id"])
    if len(set(ids)) != len(ids):
        raise QuantkitError(f"{p}: variant ids must be unique ({', '.join(ids)})")
    branch = str(cfg.get("branch") or "main")
    if branch == "main" and len(ids) > 1 and not any(t in cfg["repo"] for t in ("{name}", "{suffix}")):
        raise QuantkitError(f"{p}: every variant would go to {cfg['repo']}@main; use `repo: ORG/{{name}}` (a repo per "
                            "variant) or `branch: auto` (a branch per variant)")
    cfg["branch"] = branch
    return cfg


def publish_commands(cfg: dict, out_dir: str | os.PathLike, *, step: str = "all", only: str | None = None,
                     model: str | None = None, push: bool = False,
                     has_command: Callable[[str], bool] | None = None) -> list[str]:
    """The shell lines that calibrate once, then quantize, profile, package, verify and push every
    variant of `cfg` (the same lines `make publish` and the CI workflow run)."""
    if step not in ("all", "calibrate", "variant"):
        raise QuantkitError(f"--step {step}: choose all, calibrate or variant")
    if push and model:
        raise QuantkitError("a rehearsal on another --model pushes nothing: drop PUSH=1 (the config's repo is for "
                            f"{cfg['model']})")
    has_command = has_command or _cli_has
    variants = [v for v in cfg["variants"] if not only or v["id"] == only]
    if only and not variants:
        raise QuantkitError(f"--only {only}: no such variant id; ids: {', '.join(v['id'] for v in cfg['variants'])}")
    q = shlex.quote
    out = Path(out_dir)
    src = model or cfg["model"]
    rev = f" --revision {q(cfg['revision'])}" if cfg.get("revision") and not model else ""
    base = None if model else (cfg.get("base_model") or (cfg["model"] if _looks_hub_id(cfg["model"]) else None))
    lines = ["set -e"]
    if _looks_hub_id(src) or push:
        lines.append("export HF_HUB_OFFLINE=0  # the base model is read from the Hub, or the push needs it")
    needs_calib = any(v.get("method") != "rtn" for v in variants)
    out = out / _safe_dir(src)  # one tree per base model: a rehearsal never touches the real build
    calib = out / "calib"
    cal = cfg.get("calibration") or {}
    cal_args = "".join(f" --{k.replace('_', '-')} {q(str(cal[k]))}" for k in ("samples", "mode", "min_tokens")
                       if cal.get(k) is not None)
    calibrate = f"test -d {q(str(calib))} || quantkit calibrate {q(src)}{rev} --out {q(str(calib))}{cal_args}"
    if step in ("all", "calibrate") and needs_calib:
        lines.append(calibrate)
    if step == "calibrate":
        return lines
    if step == "variant" and needs_calib:
        lines.append(calibrate)  # a no-op when the calibrate job left it; calibrates on a fresh runner
    for v in variants:
        vdir, rdir = out / "variants" / v["id"], out / "reports" / v["id"]
        qargs = f" --profile {q(v['profile'])}" + "".join(
            f" --{k.replace('_', '-')} {q(str(v[k]))}" for k in ("bits", "group_size", "method") if v.get(k) is not None)
        if v.get("method") != "rtn":
            qargs += f" --calib {q(str(calib))}"
        lines.append(f"# variant {v['id']}")
        lines.append(f"quantkit quantize {q(src)}{rev}{qargs} --out {q(str(vdir))} --overwrite")
        report = ""
        prof = cfg.get("profile_command", DEFAULT_PROFILE_COMMAND)
        if prof and has_command("profile"):
            lines.append(f"rm -rf {q(str(rdir))}")
            lines.append(prof.format(variant=q(str(vdir)), report=q(str(rdir)), model=q(src)))
            report = f" --report {q(str(rdir))}"
        elif prof:
            lines.append("# `quantkit profile` is not available: the card says no tradeoff was measured")
        pkg = f"quantkit package {q(str(vdir))}{report}"
        if not model:  # a rehearsal's card names no repo: it is not published there
            pkg += f" --repo {q(cfg['repo'])} --revision {q(cfg['branch'])}"
        if base:
            pkg += f" --base-model {q(base)}"
        if cfg.get("license") and not model:
            pkg += f" --license {q(cfg['license'])}"
        lines.append(pkg)
        lines.append(f"quantkit verify-files {q(str(vdir))}")
        lines.append(f"quantkit push {q(str(vdir))} --repo {q(cfg['repo'])} --revision {q(cfg['branch'])}"
                     + (" --private" if cfg.get("private") else "") + ("" if push else " --dry-run"))
    return lines


def publish_matrix(cfg: dict, only: str | None = None) -> dict:
    ids = [v["id"] for v in cfg["variants"] if not only or v["id"] == only]
    if not ids:
        raise QuantkitError(f"--only {only}: no such variant id")
    return {"variant": ids}


def _safe_dir(model: str) -> str:
    from .package import source_base_name, _sanitize
    return _sanitize(source_base_name(model))


def _looks_hub_id(s: str) -> bool:
    return str(s).count("/") == 1 and not str(s).startswith((".", "/")) and not Path(s).exists()


def _cli_has(command: str) -> bool:
    from .cli import main
    return command in main.commands


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantkit.hub", description="Plan the publishing pipeline.")
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("commands", help="print the shell commands of `make publish`")
    c.add_argument("config")
    c.add_argument("--dir", required=True, help="working directory (calibration, variants, reports)")
    c.add_argument("--step", default="all", choices=["all", "calibrate", "variant"])
    c.add_argument("--only", default=None, help="one variant id")
    c.add_argument("--model", default=None, help="rehearse on another checkpoint (its push stays a dry run)")
    c.add_argument("--push", action="store_true", help="really push (default: --dry-run)")
    m = sub.add_parser("matrix", help="print the CI matrix as JSON")
    m.add_argument("config")
    m.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_publish_config(args.config)
        if args.what == "matrix":
            print(json.dumps(publish_matrix(cfg, args.only or None)))
        else:
            print("\n".join(publish_commands(cfg, args.dir, step=args.step, only=args.only or None,
                                             model=args.model or None, push=args.push)))
    except QuantkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PushOptions", "PushPlan", "PushResult", "load_publish_config", "plan_push", "publish_commands",
           "publish_matrix", "push", "update_index", "read_card_metadata"]
