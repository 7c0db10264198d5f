"""The output directory of one run (`--out` of quantize and calibrate): locked, written beside its
final place, swapped in atomically, resumable after a kill.

    OUT/                  the finished result (appears only when the run is complete)
    .OUT.partial/         this run's working directory
        result/           what becomes OUT
        state/            run.json (what the run is: source, options) + the producers' checkpoints
    .OUT.lock             held (flock) while a run writes OUT: a second run on OUT is refused
    .OUT.old              the previous OUT during a fallback swap: restored by the next run if the
                          swap was cut short

- A quantkit error (bad input), or any failure before progress was checkpointed, removes the partial
  directory and any parent directory the run created: nothing is left behind. After progress was
  checkpointed, a kill, Ctrl-C, a full disk or a crash keeps the partial directory, and the next run
  on OUT says so: continue with `--resume` (same options and source, checked against run.json) or
  remove it.
- `--overwrite` replaces OUT only once the new result is complete, with one `renameat2(EXCHANGE)`
  where the filesystem has it (the old OUT survives until the new one is in place), else two renames
  whose interruption the next run repairs.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import OutputError, QuantkitError

RUN_FILE = "run.json"
PROGRESS_PREFIX = "progress"  # state files whose presence means there is something to resume


@dataclass
class RunDir:
    out: Path
    partial: Path
    resumed: bool

    @property
    def result(self) -> Path:
        return self.partial / "result"

    @property
    def state(self) -> Path:
        return self.partial / "state"

    def has_progress(self) -> bool:
        return self.state.is_dir() and any(p.name.startswith(PROGRESS_PREFIX) for p in self.state.iterdir())


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


def _old_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def _make_parents(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents; return the ones created (deepest last)."""
    missing = []
    p = directory
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


class _Lock:
    def __init__(self, out: Path):
        self.path = _lock_path(out)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise OutputError(f"--out {out}: another quantkit run{f' (pid {holder})' if holder else ''} is writing it; "
                              "wait for it to finish or choose another --out")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _repair_cut_swap(out: Path) -> None:
    old = _old_path(out)
    if old.exists():
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)  # the swap completed; only the cleanup was cut
        else:
            os.replace(old, out)  # cut between the two renames: the previous result comes back


def _describe_run_difference(want: dict, have: dict) -> str:
    keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    return ", ".join(keys[:4]) or "unknown"


@contextmanager
def output_dir(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
               run: dict | None = None) -> Iterator[RunDir]:
    """The run's working directory beside `out` (see the module docstring). `run` describes the
    run (source fingerprint, options); a `--resume` is refused unless it equals the recorded one."""
    out = Path(out).absolute()
    try:
        created = _make_parents(out.parent)
        lock = _Lock(out)
    except OSError as e:
        raise OutputError(f"--out {out}: cannot write there ({e.strerror}); choose another --out")
    owned = False  # this run created the partial directory (and may remove it)
    run_dir = RunDir(out, partial_dir(out), resumed=False)
    try:
        _repair_cut_swap(out)
        partial = run_dir.partial
        legacy = sorted(out.parent.glob(f".{out.name}.tmp-*"))
        if legacy:
            raise OutputError(f"--out {out}: {len(legacy)} temporary director{'y' if len(legacy) == 1 else 'ies'} of an "
                              f"interrupted run of an earlier quantkit left beside it ({legacy[0].name}); remove "
                              f"{'it' if len(legacy) == 1 else 'them'} (rm -r {' '.join(str(p) for p in legacy)})")
        if out.exists() and not overwrite:
            raise OutputError(f"{out}: already exists; choose another --out or pass --overwrite")
        if partial.exists():
            recorded = _read_run(run_dir)
            if not resume:
                raise OutputError(f"--out {out}: an interrupted run left its progress in {partial}; continue it with "
                                  f"the same command plus --resume, or remove it (rm -r {partial})")
            if run is not None and recorded != run:
                raise OutputError(f"--resume: the interrupted run in {partial} was made with other options or another "
                                  f"source (differs in {_describe_run_difference(run, recorded)}); run the same command "
                                  f"as before, or remove it (rm -r {partial}) and start over")
            run_dir.resumed = True
            if not run_dir.has_progress():  # nothing checkpointed: start over in the same place
                shutil.rmtree(run_dir.result, ignore_errors=True)
                run_dir.result.mkdir(parents=True)
        else:
            owned = True
            run_dir.result.mkdir(parents=True)
            run_dir.state.mkdir()
            (run_dir.state / RUN_FILE).write_text(json.dumps(run or {}, indent=1, sort_keys=True) + "\n")
        try:
            yield run_dir
        except QuantkitError:
            owned = True  # the input is wrong: its progress cannot lead to a valid result
            raise
        except BaseException as e:  # a kill, Ctrl-C, a full disk, a crash: keep what can be resumed
            if run_dir.has_progress():
                owned = False
                e.kept_partial = str(partial)  # the CLI names it in its one line
            raise
        _commit(run_dir)
        owned = False
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            kept = "; progress kept: free space and rerun with --resume" if run_dir.has_progress() else ""
            raise OutputError(f"--out {out}: {e.strerror} while writing {e.filename or out}{kept}") from None
        raise
    finally:
        lock.release()
        if owned:
            shutil.rmtree(run_dir.partial, ignore_errors=True)
            _remove_created(created)


def _read_run(run_dir: RunDir) -> dict:
    try:
        return json.loads((run_dir.state / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _commit(run_dir: RunDir) -> None:
    out, result = run_dir.out, run_dir.result
    if out.exists():
        if not _exchange(result, out):
            old = _old_path(out)
            os.replace(out, old)
            os.replace(result, out)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(result, out)
    shutil.rmtree(run_dir.partial, ignore_errors=True)


@contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A directory that becomes `out` only if the block succeeds (no resume)."""
    with output_dir(out, overwrite=overwrite) as run:
        yield run.result
