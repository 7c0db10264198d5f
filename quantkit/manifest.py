"""`quantkit.json`, the manifest of every variant: what it was made from and how, the scheme of every
tensor, and the sha256 and size of every file. One reader, one writer, one checksum check.

The one ignore rule (`is_ignored`): the files a Hub repo or a download adds around a variant
(`.gitattributes`, a `.git/` clone, the `.cache/` of `hf download --local-dir`) are not part of it.
Every other file must be listed, dot-files included: `verify-files`, `verify`, `package` and `push`
all judge a directory by this rule.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import VariantCorrupt
from .units import human_bytes

MANIFEST = "quantkit.json"
# What a Hub repo, a git clone of one, or `hf download --local-dir` adds around a variant.
_HUB_FILES = frozenset({".gitattributes"})
_HUB_DIRS = frozenset({".git", ".cache"})


def is_ignored(rel: str | Path) -> bool:
    """True for the manifest itself and for what the Hub or a download adds around a variant."""
    parts = Path(rel).parts
    return (not parts or parts == (MANIFEST,) or (len(parts) == 1 and parts[0] in _HUB_FILES)
            or parts[0] in _HUB_DIRS)


def variant_files(directory: Path) -> list[Path]:
    """Every file of the variant in `directory` (sorted), by the one ignore rule."""
    directory = Path(directory)
    return [p for p in sorted(directory.rglob("*"))
            if p.is_file() and not is_ignored(p.relative_to(directory))]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_checksums(directory: Path) -> dict[str, dict]:
    """sha256 and size of every file of the variant in `directory` (not the manifest itself)."""
    return {p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in variant_files(directory)}


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write `manifest` with the checksums of every file now in `directory`."""
    manifest = {**manifest, "files": file_checksums(directory)}
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise VariantCorrupt(f"{directory}: no {MANIFEST}; not a quantkit variant")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VariantCorrupt(f"{path}: invalid JSON ({e})")
    if not isinstance(manifest, dict):
        raise VariantCorrupt(f"{path}: not a JSON object; not a quantkit manifest")
    return manifest


@dataclass
class FileProblem:
    path: str
    kind: str  # missing | size | sha256 | unlisted
    detail: str = ""

    def __str__(self) -> str:
        what = {"missing": "missing", "sha256": "sha256 differs from the manifest (corrupted or modified)",
                "unlisted": f"not listed in {MANIFEST}"}.get(self.kind, self.detail)
        return f"{self.path}: {what}"


@dataclass
class FilesReport:
    variant: Path
    files: int
    bytes: int
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.variant}: {self.files} files, {human_bytes(self.bytes)}: every sha256 matches {MANIFEST}"
        kinds = Counter(p.kind for p in self.problems)
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (f"{self.variant}: does not match {MANIFEST} ({self.files} files listed; {what}; "
                f"first: {self.problems[0]}); re-create the variant or restore the files")


def verify_files(variant: str | Path) -> FilesReport:
    """Re-hash every file listed in `quantkit.json` and report files it does not list (by the one
    ignore rule)."""
    variant = Path(variant)
    manifest = read_manifest(variant)
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise VariantCorrupt(f"{variant}/{MANIFEST}: no `files` checksums; re-create the variant with quantkit")
    report = FilesReport(variant, len(listed), sum(int(v.get("size", 0)) for v in listed.values()))
    for rel, want in sorted(listed.items()):
        p = variant / rel
        if not p.is_file():
            report.problems.append(FileProblem(rel, "missing"))
        elif p.stat().st_size != want.get("size"):
            report.problems.append(FileProblem(rel, "size", f"size {p.stat().st_size}, manifest says {want.get('size')}"))
        elif sha256_file(p) != want.get("sha256"):
            report.problems.append(FileProblem(rel, "sha256"))
    for p in variant_files(variant):
        rel = p.relative_to(variant).as_posix()
        if rel not in listed:
            report.problems.append(FileProblem(rel, "unlisted"))
    return report


def checked_manifest(variant: str | Path) -> dict:
    """The manifest of a variant whose files all match it; VariantCorrupt (one line) otherwise."""
    report = verify_files(variant)
    if not report.ok:
        raise VariantCorrupt(report.summary())
    return read_manifest(Path(variant))
