"""Make a variant directory ready to publish: its model card, its name, and its checksums.

`package(PackageOptions(variant=...))`:
  1. verifies every file listed in `quantkit.json` (sha256 and size) and that no unlisted file is
     there (`quantkit.manifest.checked_manifest`), so a card is never written over a damaged variant;
  2. writes `README.md`, the model card (card.py), with the runtime verdicts of `quantkit verify`
     (or the ones given) and the tradeoff table of a `quantkit profile` report when one is given;
  3. records the card and the packaging facts in `quantkit.json` (`package`) and updates its
     `files` entry for README.md, so `quantkit verify-files` covers the card too.

Card and manifest land together (`write_card_and_manifest`): both are written in full to hidden
`.NAME.*.partial` files first, then the card is renamed into place and the manifest last. A kill
between the two renames leaves the new manifest as a `.quantkit.json.*.partial` file that records
the new card's sha256; the next `package` (`recover_package`) finishes that rename when the card on
disk is exactly the one it records, and otherwise removes the leftovers of a package that did not
finish (the partial files, and a README.md when quantkit.json records no card yet).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from huggingface_hub import try_to_load_from_cache

from ..errors import CheckpointError, UsageError, VariantCorrupt
from ..manifest import MANIFEST, read_manifest, sha256_file, verify_files
from ..verify import verify
from ..version import QUANTKIT_VERSION
from .card import CARD, CardContext, read_card_metadata, render_card
from .card_sections import role_rows
from .naming import HUB_ID, VariantName, resolve_target, variant_name
from .tables import read_report


@dataclass
class PackageOptions:
    variant: Path
    report: Path | None = None  # a `quantkit profile` output directory
    base_model: str | None = None  # Hub id of the base when the source was a local directory
    license: str | None = None  # overrides the license read from the base model's card
    name: str | None = None  # overrides the conventional <base> part of the name
    repo: str | None = None  # the repo the card's commands point at (placeholders as in push)
    revision: str | None = None  # the branch the card's commands point at
    verdicts: dict | list | Path | None = None  # a verify report (dict or JSON file); None = collect_verdicts
    run_verify: bool = True  # run `quantkit verify` (collect_verdicts) when no verdicts are given


@dataclass
class PackageResult:
    variant: Path
    name: VariantName
    card: Path
    files: int
    bytes: int
    metadata: dict
    warnings: list[str]


def package(opts: PackageOptions, log: Callable[[str], None] = lambda m: None) -> PackageResult:
    variant = Path(opts.variant)
    for note in recover_package(variant):
        log(f"note: {note}")
    manifest = _checked(variant)
    src = manifest.get("source") or {}
    src_card = _source_card(src)
    base_model = _base_model(src, opts.base_model)
    warnings = []
    if base_model is None:
        warnings.append(f"the source `{src.get('id')}` is a local directory: pass --base-model ORG/NAME so the "
                        "Hub lists the variant as a quantization of its base")
    lic = opts.license or src_card.get("license") or "unknown"
    extra = {k: src_card[k] for k in ("license_name", "license_link") if k in src_card and not opts.license}
    if lic == "unknown":
        warnings.append("the base model's license could not be read (no local card): pass --license ID")
    name = variant_name(manifest, base=opts.name or (base_model.split("/")[1] if base_model else None))
    repo, revision = resolve_target(opts.repo, opts.revision, name) if opts.repo or opts.revision else (None, None)
    verdicts = opts.verdicts
    if isinstance(verdicts, (str, Path)):
        try:
            verdicts = json.loads(Path(verdicts).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"--verdicts {opts.verdicts}: not a readable JSON file ({e})")
    elif verdicts is None and opts.run_verify:
        verdicts = collect_verdicts(variant)
    report = read_report(opts.report) if opts.report else None
    try:
        config = json.loads((variant / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VariantCorrupt(f"{variant}/config.json: unreadable ({e})")
    ctx = CardContext(variant=variant, manifest=manifest, name=name, base_model=base_model, license=lic,
                      license_extra=extra, rows=role_rows(variant, manifest), config=config, report=report,
                      verdicts=verdicts, repo=repo, revision=revision)
    text = render_card(ctx)
    meta = read_card_metadata(text)
    card_bytes = text.encode("utf-8")
    manifest["files"] = {**manifest["files"],
                         CARD: {"sha256": hashlib.sha256(card_bytes).hexdigest(), "size": len(card_bytes)}}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest["package"] = {"name": name.full, "base": name.base, "suffix": name.suffix, "card": CARD,
                           "base_model": base_model, "license": lic, "repo": repo, "revision": revision,
                           "report": {k: v for k, v in report.items() if k != "table"} if report else None,
                           "verdicts": verdicts is not None, "quantkit_version": QUANTKIT_VERSION,
                           "packaged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_card_and_manifest(variant, card_bytes, (json.dumps(manifest, indent=1) + "\n").encode())
    for w in warnings:
        log(f"warning: {w}")
    files = manifest["files"]
    return PackageResult(variant, name, variant / CARD, len(files) + 1,
                         sum(v["size"] for v in files.values()) + (variant / MANIFEST).stat().st_size, meta, warnings)


def _checked(variant: Path) -> dict:
    """checked_manifest, with the one repair left to the user said plainly: a card edited by hand."""
    report = verify_files(variant)
    if report.ok:
        return read_manifest(variant)
    if {p.path for p in report.problems} == {CARD}:
        raise VariantCorrupt(f"{variant / CARD}: differs from the card {MANIFEST} records (edited by hand?); remove "
                             f"it (`quantkit package {variant}` writes it again) or restore it")
    raise VariantCorrupt(report.summary())


def collect_verdicts(variant: Path) -> dict:
    """The runtime verdicts the card records: `quantkit verify` on every runtime of the variant's format.
    `package(..., verdicts=...)` (CLI: `--verdicts FILE`, the output of `quantkit verify --json`) takes
    a verdict dict instead, and `run_verify=False` (`--no-verify`) records none."""
    return verify(variant).to_json()


def packaged_card(variant: Path, manifest: dict) -> dict:
    """The card's metadata of a packaged variant; one-line error when there is no current card."""
    card = variant / CARD
    if not (manifest.get("package") and CARD in (manifest.get("files") or {}) and card.is_file()):
        raise UsageError(f"{variant}: no model card; run `quantkit package {variant}` first")
    meta = read_card_metadata(card)
    if not meta:
        raise VariantCorrupt(f"{card}: no YAML metadata; run `quantkit package {variant}` again")
    return meta


_PARTIAL = ".partial"


def _partial(path: Path, data: bytes) -> Path:
    """`data` in full (flushed to disk) in a hidden `.NAME.*.partial` file next to `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_PARTIAL, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename (a reader sees the old file or the new one)."""
    tmp = _partial(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_card_and_manifest(variant: Path, card: bytes, manifest: bytes) -> None:
    """The card and the manifest that lists it, landing together: both written in full first, then
    the card renamed into place, then the manifest (the commit point). Interrupted before the card's
    rename, nothing changed; after it, the `.quantkit.json.*.partial` file stays as the record
    `recover_package` completes on the next run."""
    card_tmp = _partial(variant / CARD, card)
    try:
        manifest_tmp = _partial(variant / MANIFEST, manifest)
    except BaseException:
        card_tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(card_tmp, variant / CARD)
    except BaseException:
        card_tmp.unlink(missing_ok=True)
        manifest_tmp.unlink(missing_ok=True)
        raise
    os.replace(manifest_tmp, variant / MANIFEST)


def recover_package(variant: Path) -> list[str]:
    """Repair what a `package` that did not finish left in `variant`; returns what was done, in words.

    - a `.quantkit.json.*.partial` whose README.md entry is the README.md on disk (sha256 and size)
      and whose other entries equal quantkit.json's is the manifest that package meant to write: it
      is renamed into place (the interrupted package is finished);
    - other `.README.md.*.partial` / `.quantkit.json.*.partial` files are removed;
    - a README.md that quantkit.json does not list while it records no card is removed (this package
      writes the card again); a card quantkit.json lists but that is gone is dropped from it.
    A README.md that differs from the one quantkit.json records is left alone: `package` then refuses
    the variant as damaged, as it does for any other file."""
    variant = Path(variant)
    if not (variant / MANIFEST).is_file():
        return []
    notes = []
    partials = sorted(variant.glob(f".{MANIFEST}.*{_PARTIAL}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in partials:
        if _finishes(variant, p):
            os.replace(p, variant / MANIFEST)
            notes.append(f"{variant}: finished a `quantkit package` that was interrupted ({MANIFEST} now lists "
                         f"its {CARD})")
            break
    for p in [*variant.glob(f".{MANIFEST}.*{_PARTIAL}"), *variant.glob(f".{CARD}.*{_PARTIAL}")]:
        p.unlink(missing_ok=True)
        notes.append(f"{variant}: removed {p.name}, left by a `quantkit package` that did not finish")
    manifest = read_manifest(variant)
    files = manifest.get("files")
    if not isinstance(files, dict):
        return notes
    card = variant / CARD
    if CARD not in files and card.is_file():
        card.unlink()
        notes.append(f"{variant}: removed a {CARD} that {MANIFEST} does not list (it records no card yet)")
    elif CARD in files and not card.exists():
        manifest["files"] = {k: v for k, v in files.items() if k != CARD}
        manifest.pop("package", None)
        atomic_write(variant / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        notes.append(f"{variant}: {CARD} is gone; {MANIFEST} no longer lists it")
    return notes


def _finishes(variant: Path, partial: Path) -> bool:
    """Whether `partial` is the manifest an interrupted package wrote for the card now on disk."""
    try:
        new, old = json.loads(partial.read_text()), read_manifest(variant)
    except (OSError, ValueError, VariantCorrupt):
        return False
    if not isinstance(new, dict) or not isinstance(new.get("files"), dict) or not isinstance(old.get("files"), dict):
        return False
    want, card = new["files"].get(CARD), variant / CARD
    if not isinstance(want, dict) or not card.is_file():
        return False
    others = ({k: v for k, v in m["files"].items() if k != CARD} for m in (new, old))
    rest = ({k: v for k, v in m.items() if k not in ("files", "package")} for m in (new, old))
    return (next(others) == next(others) and next(rest) == next(rest) and card.stat().st_size == want.get("size")
            and sha256_file(card) == want.get("sha256"))


# -- the base model: its Hub id and its card ----------------------------------------------------

def _source_card(source: dict) -> dict:
    """The base model's card metadata where it can be read without the network: a local source
    directory's README.md, or the Hub cache's copy of the repo's README.md."""
    sid = str(source.get("id") or "")
    p = Path(sid)
    path = None
    if p.is_dir():
        path = p / CARD if (p / CARD).is_file() else None
    elif HUB_ID.match(sid):
        try:
            cached = try_to_load_from_cache(sid, CARD, revision=source.get("revision"))
        except Exception:  # noqa: BLE001 - a cache lookup must never stop packaging
            cached = None
        path = Path(cached) if isinstance(cached, str) and Path(cached).is_file() else None
    if path is None:
        return {}
    try:
        return read_card_metadata(path)
    except VariantCorrupt as e:
        raise CheckpointError(f"{path}: the base model's card: {e}") from None


def _base_model(source: dict, explicit: str | None) -> str | None:
    if explicit:
        if not HUB_ID.match(explicit):
            raise UsageError(f"--base-model {explicit}: expected a Hub id ORG/NAME")
        return explicit
    sid = str(source.get("id") or "")
    p = Path(sid)
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        parts = p.parent.parent.name.split("--")
        if len(parts) >= 3:
            return f"{parts[1]}/{'--'.join(parts[2:])}"
    if HUB_ID.match(sid) and not p.exists():
        return sid
    return None


__all__ = ["PackageOptions", "PackageResult", "atomic_write", "collect_verdicts", "package", "packaged_card",
           "recover_package", "write_card_and_manifest"]
