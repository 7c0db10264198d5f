"""`quantkit verify` for a GGUF variant: the file is what quantkit.json says, and llama.cpp runs it.

Integrity:
  integrity.checksums       every file listed in quantkit.json matches its sha256 and size, none unlisted
  integrity.gguf_file       the .gguf reads with the `gguf` package: the model family's llama.cpp arch
                            (ernie4_5-moe for the text ERNIE-4.5 MoE), one GGUF tensor
                            for each planned one with the planned GGML type, the size quantkit.json
                            predicted, and the hyper-parameters llama.cpp needs for this arch
  integrity.finite_scales   no NaN or infinite d / min in any quantized block
  integrity.kept_identical  kept tensors (F32 routers and norms, source-dtype embeddings) equal the
                            source's values; skipped (optional) when the source is not at hand
Runtimes:
  llama.cpp     llama-cpp-python loads the file (its own loader: every tensor, every hyper-parameter)
                and evaluates a few tokens to finite logits; skipped (not proven) without llama_cpp
  transformers  `quantkit.load` builds the model from the .gguf and a forward pass is finite
vLLM and onnxruntime check GPTQ checkpoints; asked for on a GGUF variant they fail with that reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...checkpoint import Checkpoint
from ...errors import CheckpointError, QuantkitError
from ...loader import load as load_model
from ...manifest import read_manifest, verify_files
from ...verdicts import Check, RuntimeVerdict, VerifyReport, failed, from_offenders, passed, skipped
from .engine import open_llama
from .reader import source_tensors
from .types import BlockWeight
from .variant import gguf_file
from .writer import hparam_keys

RUNTIMES = ("llama.cpp", "transformers")
_SRC = "llama.cpp src/models/<arch>.cpp (load_arch_hparams / load_arch_tensors)"


def check_checksums(variant: Path) -> Check:
    rep = verify_files(variant)
    return from_offenders("integrity.checksums", [str(p) for p in rep.problems],
                          "files must match the sha256 and size in quantkit.json")


def _adapter(variant: Path):
    """The variant's family adapter (its config.json), or None when it cannot be read."""
    import json

    from ...adapters import adapter_for

    try:
        return adapter_for(json.loads((variant / "config.json").read_text()))
    except (OSError, ValueError, QuantkitError):
        return None


def _expected_arch(variant: Path, manifest: dict) -> str | None:
    """The llama.cpp architecture of the variant's model family (its config.json's adapter), else the
    one quantkit.json records."""
    adapter = _adapter(variant)
    return adapter.gguf_arch if adapter is not None else (manifest.get("gguf") or {}).get("arch")


def check_file(variant: Path, manifest: dict):
    """(check, reader or None)."""
    from gguf import GGUFReader

    try:
        path = gguf_file(variant)
        reader = GGUFReader(path)
    except (QuantkitError, ValueError, OSError) as e:
        return failed("integrity.gguf_file", [str(e)], f"the GGUF file does not read: {e}"), None
    bad = []
    fields = reader.fields
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else None
    expected = _expected_arch(variant, manifest)
    if arch != expected:
        bad.append(f"general.architecture is {arch!r}, not {expected!r}")
    adapter = _adapter(variant)
    for key in hparam_keys(adapter) if adapter is not None and arch == expected else []:
        if key not in fields:
            bad.append(f"{key} missing")  # the family's hyper-parameters (Adapter.gguf_hparams)
    tensors = manifest.get("tensors") or {}
    if any(rec.get("role") == "shared_expert" for rec in tensors.values()) and \
            f"{arch}.expert_shared_feed_forward_length" not in fields:
        bad.append(f"{arch}.expert_shared_feed_forward_length missing: llama.cpp would leave the shared experts unused")
    planned = {}
    for name, rec in tensors.items():
        if not rec.get("gguf_file"):  # the vision tower lives in the projector file (check_projector)
            planned.setdefault(rec.get("gguf_name"), set()).add(rec.get("gguf_type"))
    in_file = {t.name: t.tensor_type.name for t in reader.tensors}
    for gname, types in sorted(planned.items()):
        if gname not in in_file:
            bad.append(f"{gname}: planned, not in the file")
        elif {in_file[gname]} != types:
            bad.append(f"{gname}: {in_file[gname]} in the file, planned {sorted(types)}")
    bad += [f"{n}: in the file, not in quantkit.json" for n in sorted(set(in_file) - set(planned))]
    want = (manifest.get("gguf") or {}).get("predicted_file_bytes")
    if want is not None and path.stat().st_size != want:
        bad.append(f"{path.name}: {path.stat().st_size} bytes, quantkit.json predicted {want}")
    return from_offenders("integrity.gguf_file", bad, "the .gguf must hold exactly the planned tensors and "
                          "the hyper-parameters llama.cpp reads", _SRC), reader


def check_values(variant: Path, manifest: dict, reader, source: str | Path | None) -> list[Check]:
    tensors = source_tensors(variant, reader)
    bad_scales = [n for n, v in tensors.items() if isinstance(v, BlockWeight)
                  and not all(torch.isfinite(x).all() for x in (v.d, v.m) if x is not None)]
    finite = from_offenders("integrity.finite_scales", bad_scales, "every block's d and min must be finite")
    src = source or (manifest.get("source") or {}).get("id")
    try:
        ckpt = Checkpoint.open(src) if src and Path(str(src)).is_dir() else None
    except CheckpointError:
        ckpt = None
    adapter = _adapter(variant)
    if ckpt is not None and adapter is not None:
        ckpt = adapter.checkpoint_view(ckpt)  # the names the plan used
    if ckpt is None:
        return [finite, skipped("integrity.kept_identical", f"source {src} is not a local directory; pass --source",
                                optional=True)]
    bad = []
    for name, rec in (manifest.get("tensors") or {}).items():
        if rec.get("scheme") != "keep":
            continue
        ours, theirs = tensors[name], ckpt.read(name)
        if tuple(ours.shape) != tuple(theirs.shape) or not torch.equal(ours.float(), theirs.float()):
            bad.append(f"{name}: values differ from the source")
    return [finite, from_offenders("integrity.kept_identical", bad, "kept tensors must equal the source's values")]


def _probe_tokens(variant: Path, n: int = 8) -> list[int]:
    adapter = _adapter(variant)
    vocab = adapter.shape.vocab_size if adapter is not None else 1000
    return [int(x) for x in np.linspace(3, min(vocab, 1000) - 1, n)]


def check_llama_cpp(variant: Path) -> Check:
    try:
        import llama_cpp
    except ImportError:
        return skipped("llama.cpp.load", "llama-cpp-python is not installed (pip install llama-cpp-python)")
    src = f"llama-cpp-python {llama_cpp.__version__}"
    ids = _probe_tokens(variant)
    try:
        llm = open_llama(gguf_file(variant), n_ctx=32, n_threads=1, logits_all=True, verbose=False)
        llm.eval(ids)
        scores = np.array(llm.scores[:len(ids)])
        llm.close()
    except Exception as e:  # noqa: BLE001 - the engine's refusal is the finding
        return failed("llama.cpp.load", [str(e)], f"llama.cpp does not load or run the file: {e}", src)
    if not np.isfinite(scores).all():
        return failed("llama.cpp.load", ["non-finite logits"], "llama.cpp ran the file but its logits are not finite", src)
    return passed("llama.cpp.load", src, f"loaded; {len(ids)} tokens evaluated")


def check_projector(variant: Path, manifest: dict) -> Check | None:
    """The vision projector file (mmproj), when the variant has one: llama.cpp's mtmd loads it against
    the model and reports vision support."""
    rec = (manifest.get("gguf") or {}).get("mmproj")
    if not rec:
        return None
    try:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd
    except (ImportError, OSError):
        return skipped("llama.cpp.mmproj", "llama-cpp-python with mtmd is not installed")
    src = f"llama-cpp-python {llama_cpp.__version__} (mtmd)"
    path = variant / rec["file"]
    try:
        llm = open_llama(gguf_file(variant), n_ctx=32, n_threads=1, verbose=False)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.n_threads, params.print_timings = False, 1, False
        ctx = mtmd.mtmd_init_from_file(str(path).encode(), llm.model, params)
        ok = bool(ctx) and mtmd.mtmd_support_vision(ctx)
        if ctx:
            mtmd.mtmd_free(ctx)
        llm.close()
    except Exception as e:  # noqa: BLE001 - the engine's refusal is the finding
        return failed("llama.cpp.mmproj", [str(e)], f"llama.cpp's mtmd does not load {path.name}: {e}", src)
    if not ok:
        return failed("llama.cpp.mmproj", [path.name], f"llama.cpp's mtmd does not load {path.name} as a vision projector", src)
    return passed("llama.cpp.mmproj", src, f"{path.name} loaded as a {rec.get('projector_type')} vision projector")


def check_transformers(variant: Path, load: bool) -> Check:
    if not load:
        return skipped("transformers.load", "--no-load")
    try:
        model = load_model(variant, verify=False)  # integrity.checksums already hashed every file
        with torch.no_grad():
            logits = model(torch.tensor([_probe_tokens(variant)])).logits
    except Exception as e:  # noqa: BLE001
        return failed("transformers.load", [str(e)], f"quantkit.load fails on the GGUF variant: {e}")
    if not torch.isfinite(logits).all():
        return failed("transformers.load", ["non-finite logits"], "the decoded model's logits are not finite")
    return passed("transformers.load", "quantkit.load (gguf reader)")


def verify_gguf(variant: str | Path, runtimes=RUNTIMES, source: str | Path | None = None, *,
                load: bool = True) -> VerifyReport:
    variant = Path(variant)
    manifest = read_manifest(variant)
    file_check, reader = check_file(variant, manifest)
    integrity = [check_checksums(variant), file_check]
    if reader is not None:
        integrity += check_values(variant, manifest, reader, source)
    report = VerifyReport(str(variant), integrity)
    for name in runtimes:
        if name == "llama.cpp":
            checks = [check_llama_cpp(variant)]
            projector = check_projector(variant, manifest)
            if projector is not None:
                checks.append(projector)
        elif name == "transformers":
            checks = [check_transformers(variant, load)]
        else:
            checks = [failed(f"{name}.format", ["format gguf"],
                             f"{name} is checked on GPTQ variants; this is a GGUF variant for llama.cpp "
                             "(llama-server -m FILE)")]
        report.runtimes[name] = RuntimeVerdict(name, checks, integrity_ok=report.integrity_ok)
    return report
