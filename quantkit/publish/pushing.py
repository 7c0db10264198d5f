"""Push packaged variants to the Hugging Face Hub.

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
    name suffix). `main` then gets a card listing the repo's variants, regenerated from every
    branch's `quantkit.json` after each push, so the Hub classifies the repo (its metadata says
    `base_model_relation: quantized`).

Every failure is a HubError of one line that names the repo (hub_errors.py): missing token,
rejected token (401), no write access (403), a branch holding different content, a branch that
moved meanwhile (412), a network failure, no answer within the time limit, an error answer of the Hub.

Every request has a time limit (hub_http.py: `timeout`, QUANTKIT_HUB_TIMEOUT, 60 s) and reads are
retried on network failures and 5xx answers. The commit is never sent twice: when its answer is
lost (network failure, timeout, 5xx), the branch is read again, and a branch that moved from the
compared head to exactly the variant's files counts as pushed (parent_commit makes that the
commit of this push).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile

from ..errors import HubError, QuantkitError, UsageError
from ..manifest import MANIFEST, checked_manifest, read_manifest, sha256_file
from ..units import human_bytes
from ..version import QUANTKIT_VERSION
from .card import CARD, format_facts, index_entry, render_index_card
from .hub_errors import Stage, hub_errors, offline_error
from .hub_http import bounded_requests, hub_timeout, retryable, retrying
from .naming import VariantName, expert_scheme, resolve_target, variant_name
from .packaging import packaged_card

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
    timeout: float | None = None  # seconds a request may go without progress; default QUANTKIT_HUB_TIMEOUT or 60


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
        layout = ("one repo per variant" if self.layout == "repo" else
                  "a branch per variant; main gets the card listing the variants")
        out = [f"dry run: nothing is sent to {self.endpoint}",
               f"repo:    {self.repo} (created if missing, {'private' if self.private else 'public'})",
               f"branch:  {self.revision}" + ("" if self.revision == "main" else " (created from main if missing)"),
               f"layout:  {layout}",
               f"commit:  {self.message}",
               f"files:   {len(self.files)} files, {human_bytes(self.total)} ({self.total} bytes)"]
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
    answer_lost: bool = False  # the commit's answer never came; the branch, read again, holds the variant

    def lines(self) -> list[str]:
        if self.dry_run:
            return self.plan.lines()
        p = self.plan
        where = f"{p.repo}@{p.revision}"
        if self.unchanged:
            out = [f"{where} already holds {p.name.full} byte for byte (commit {self.commit}); nothing pushed"]
        else:
            out = [f"pushed {p.name.full} to {where}: {len(p.files)} files, {human_bytes(p.total)}, one commit "
                   f"{self.commit}" + (f", {len(self.deleted)} stale files removed" if self.deleted else "")
                   + (" (its answer was lost; the branch, read again, holds the variant)" if self.answer_lost else ""),
                   f"  {self.commit_url}"]
        if p.layout == "branch":
            index = f"updated, commit {self.index_commit}" if self.index_commit else "already up to date"
            out.append(f"main card listing the variants: {index}")
        return out


# -- planning (local only) ------------------------------------------------------------------------

def default_endpoint() -> str:
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
        raise UsageError(f"{variant}: its card was written for {pkg['repo']}@{pkg.get('revision') or 'main'}, not "
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


# -- pushing ---------------------------------------------------------------------------------------

def _token(opts: PushOptions, repo: str) -> str:
    token = opts.token or get_token()
    if not token:
        raise HubError(f"no Hub token: set HF_TOKEN (a write token) or run `hf auth login` to push to {repo}")
    return token


def push(opts: PushOptions, log: Callable[[str], None] = lambda m: None) -> PushResult:
    plan = plan_push(opts)
    if opts.dry_run:
        return PushResult(plan, dry_run=True)
    token = _token(opts, plan.repo)
    if constants.is_offline_mode():
        raise offline_error(plan.repo)
    timeout = hub_timeout(opts.timeout)
    with bounded_requests(timeout):
        return _push(plan, opts, token, timeout, log)


def _branches(api, repo: str) -> dict[str, str]:
    return retrying(lambda: {b.name: b.target_commit for b in api.list_repo_refs(repo).branches})


def _tree(api, repo: str, commit: str) -> dict[str, RepoFile]:
    return retrying(lambda: {f.path: f for f in api.list_repo_tree(repo, revision=commit, recursive=True)
                             if isinstance(f, RepoFile)})


def _push(plan: PushPlan, opts: PushOptions, token: str, timeout: float, log: Callable[[str], None]) -> PushResult:
    api = HfApi(endpoint=plan.endpoint, token=token, library_name="quantkit", library_version=QUANTKIT_VERSION)
    stage = Stage(plan.variant, plan.repo, plan.revision, plan.endpoint, timeout)
    target = f"{plan.repo}@{plan.revision}"
    result = PushResult(plan)
    with hub_errors(stage):
        stage.now = f"creating the repo {plan.repo}"
        try:  # look first: create_repo(exist_ok) on a repo it may not create builds a default-endpoint
            retrying(lambda: api.repo_info(plan.repo))  # URL that fails to parse under a custom HF_ENDPOINT (hub 2.4)
        except RepositoryNotFoundError:
            api.create_repo(plan.repo, private=True if plan.private else None, exist_ok=True)
            result.created_repo = True
        stage.now = f"listing the branches of {plan.repo}"
        branches = _branches(api, plan.repo)
        if plan.revision not in branches:
            stage.now = f"creating the branch {plan.revision} in {plan.repo}"
            api.create_branch(plan.repo, branch=plan.revision)
            result.created_branch = True
            branches = _branches(api, plan.repo)
        head = branches[plan.revision]
        stage.now = f"reading the branch {target}"
        remote = _tree(api, plan.repo, head)
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
                raise HubError(f"{target} already holds {holds} ({len(differ)} files differ, "
                               f"e.g. {differ[0] if differ else changed[0].path}); push to another --revision, "
                               "or pass --update to replace it with a new commit")
            ops = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.local)) for f in changed]
            if not fresh:
                ops += [CommitOperationDelete(path_in_repo=p) for p in extra]
                result.deleted = extra
            verb = "Update" if (MANIFEST in remote and not result.created_branch) else "Add"
            stage.now, stage.committing = f"committing to {target}", True
            try:
                info = api.create_commit(plan.repo, ops, commit_message=verb + plan.message[3:],
                                         commit_description=plan.description, revision=plan.revision,
                                         parent_commit=head)
                result.commit, result.commit_url = info.oid, info.commit_url
            except BaseException as e:
                landed = _landed(api, plan, head) if isinstance(e, Exception) and retryable(e) else None
                if landed is None:
                    if result.created_branch:
                        _rollback_branch(api, plan)
                    raise
                result.commit, result.answer_lost = landed, True
                result.commit_url = f"{plan.endpoint}/{plan.repo}/commit/{landed}"
            stage.committing = False
    if plan.layout == "branch":
        stage.now = f"updating the card listing the variants on main of {plan.repo}"
        try:
            with hub_errors(stage):
                result.index_commit = update_index(api, plan, log)
        except QuantkitError as e:
            raise HubError(f"{plan.name.full} is pushed to {target} (commit {result.commit}), but main's card was "
                           f"not updated: {e}; re-run the same push to retry it") from None
    return result


def _same(f: PushFile, remote) -> bool:
    """Whether the remote file has the local content: LFS files by sha256, others by git blob id."""
    if remote is None or remote.size != f.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == f.sha256
    return remote.blob_id == _git_blob_sha1(f.local, f.size)


def _git_blob_sha1(path: Path, size: int) -> str:
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _landed(api, plan: PushPlan, head: str) -> str | None:
    """After a commit whose answer was lost: the branch's new head when it moved from `head` to a tree
    that is exactly the variant's files (the commit had `parent_commit=head`, so that is this push's
    commit), else None. Never raises: a failure to read says nothing landed for sure."""
    try:
        now = _branches(api, plan.repo).get(plan.revision)
        if now is None or now == head:
            return None
        remote = _tree(api, plan.repo, now)
    except Exception:  # noqa: BLE001 - the commit's own error is the one to report
        return None
    local = {f.path for f in plan.files}
    if set(remote) - local - _KEEP_REMOTE or not all(_same(f, remote.get(f.path)) for f in plan.files):
        return None
    return now


def _rollback_branch(api, plan: PushPlan) -> None:
    """Delete the branch this push created, so a failed push leaves the repo's branches as they were."""
    try:
        api.delete_branch(plan.repo, branch=plan.revision)
    except Exception:  # noqa: BLE001 - best effort; a retry copes with the empty branch
        pass


def update_index(api, plan: PushPlan, log: Callable[[str], None] = lambda m: None) -> str | None:
    """Regenerate main's README.md from every branch's quantkit.json; returns the commit or None
    when it is already current. Retries when main moves meanwhile (parallel pushes)."""
    manifest = read_manifest(plan.variant)
    config = json.loads((plan.variant / "config.json").read_text())
    facts = format_facts(plan.variant, manifest, config, name=plan.name, base_model=plan.card.get("base_model"),
                         repo=plan.repo)
    with tempfile.TemporaryDirectory(prefix="quantkit-index-") as cache:
        for attempt in range(3):
            branches = _branches(api, plan.repo)
            main = branches.get("main")
            main_files = set(_tree(api, plan.repo, main)) if main else set()
            if MANIFEST in main_files:
                log(f"warning: {plan.repo}@main holds a variant itself; its card is left as it is")
                return None
            entries = []
            for name, oid in sorted(branches.items()):
                if name == "main":
                    continue
                try:
                    path = retrying(lambda oid=oid: api.hf_hub_download(plan.repo, MANIFEST, revision=oid,
                                                                         cache_dir=cache))
                except EntryNotFoundError:
                    continue
                branch_manifest = json.loads(Path(path).read_text())
                if branch_manifest.get("package"):
                    entries.append(index_entry(name, branch_manifest, oid))
            text = render_index_card(plan.repo, plan.card, entries, facts)
            if CARD in main_files:
                current = Path(retrying(lambda: api.hf_hub_download(plan.repo, CARD, revision=main,
                                                                     cache_dir=cache))).read_text()
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


__all__ = ["PushFile", "PushOptions", "PushPlan", "PushResult", "default_endpoint", "plan_push", "push",
           "update_index"]
