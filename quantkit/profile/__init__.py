"""`quantkit profile`: the memory and accuracy tradeoff of variants against their reference.

    profile(ProfileOptions(reference=DIR, variants=[DIR, ...], out=DIR)) -> report dict

writes ``report.json``, ``report.md`` and ``tradeoff.png`` into ``out`` (schema: ``report.py``).
Memory comes from the files and the config (``memory.py``), accuracy from one teacher-forced pass
of every model over the evaluation set (``accuracy.py``), on CPU in fp32 (``quantkit.load``). With
CUDA available, each variant also runs one batch on the GPU and its peak allocated memory is
reported next to the estimate for that run.

The evaluation set is ``--eval FILE`` (samples JSONL whose last message is the reference answer,
e.g. ``quantkit.reference.task.write_jsonl``), else the task's held-out split generated on the fly
(``quantkit.reference.task``, ``eval_items_per_kind`` items of each kind), written to
``out/eval/eval.jsonl`` so the run can be repeated on exactly those items.
"""
from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import loader, serving
from ..calibrate.processor import load_processor
from ..checkpoint import Checkpoint
from ..errors import UsageError, VariantCorrupt
from ..format import format_of_variant
from ..reference import task
from ..version import QUANTKIT_VERSION
from . import accuracy, memory, report

DEFAULT_CONTEXTS = (4096, 32768)


@dataclass
class ProfileOptions:
    reference: str
    variants: list[str]
    out: Path
    eval: str | None = None  # samples JSONL with reference answers; None: the task's held-out split
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    batch: int = 1  # sequences served at once, for the VRAM estimate
    eval_items_per_kind: int = 40
    batch_size: int = 32  # evaluation batch
    cuda: str = "auto"  # "auto": measure peak GPU memory when CUDA is available; "off"


def parse_contexts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.strip().lower().replace("k", "000")) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--context {text}: expected token counts such as 4096,32768")
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"--context {text}: expected positive token counts such as 4096,32768")
    return values


def _manifest(path: Path) -> dict:
    f = path / "quantkit.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _describe_variant(path: Path) -> dict:
    """Method and expert scheme from the variant's manifest (quantkit.json)."""
    m = _manifest(path)
    schemes = [t["scheme"] for t in (m.get("tensors") or {}).values() if t.get("role", "").startswith("routed_expert")]
    scheme = max(set(schemes), key=schemes.count) if schemes else "unknown"
    method = scheme.split("-")[0] if "-" in scheme else ",".join(m.get("method") or ["?"])
    m_bits = re.search(r"-w(\d+)", scheme)
    bits = int(m_bits.group(1)) if m_bits else None
    allocated = bool(m.get("allocation"))
    if allocated:  # bits chosen per unit (--target-size / --vram): its own series on the plot
        scheme, bits = f"allocated ({', '.join(sorted(set(schemes)))})", None
    return {"method": method, "expert_bits": bits, "expert_scheme": scheme,
            "series": f"{method} allocated" if allocated else method,
            "profile": (m.get("profile") or {}).get("name")}


def _machine() -> dict:
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)
    a @ b
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    dt = time.perf_counter() - t0
    return {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "fp32_gflops": 2 * 512**3 * reps / dt / 1e9,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _resolve_paths(opts: ProfileOptions) -> tuple[Path, list[Path]]:
    ref = Path(opts.reference)
    variants = [Path(v) for v in opts.variants]
    for p in [ref, *variants]:
        if not (p / "config.json").is_file():
            raise VariantCorrupt(f"{p}: not a model directory (no config.json)")
    for v in variants:
        format_of_variant(v).check_variant(v)
    return ref, variants


def reference_of(variant: str | Path) -> str | None:
    """The source a variant was made from (its manifest), when that is a local directory."""
    src = (_manifest(Path(variant)).get("source") or {}).get("id")
    return src if src and Path(src, "config.json").is_file() else None


def profile(opts: ProfileOptions, log: Callable[[str], None] = lambda m: None) -> dict:


    ref_dir, variant_dirs = _resolve_paths(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    processor = load_processor(str(ref_dir), vision=True)
    if opts.eval:
        items = task.read_jsonl(opts.eval)
        source = str(opts.eval)
    else:
        items = task.generate("eval", opts.eval_items_per_kind)
        source = str(task.write_jsonl(items, out / "eval" / "eval.jsonl"))
    if not items:
        raise UsageError(f"--eval {opts.eval}: no items")
    batches = accuracy.prepare_batches(processor, items, opts.batch_size)
    config = json.loads((ref_dir / "config.json").read_text())
    shape = memory.ServingShape.from_config(config, max_image_patches=memory.max_image_patches(ref_dir))
    top_k = shape.top_k
    use_cuda = opts.cuda != "off" and torch.cuda.is_available()

    def memory_of(path: Path) -> dict:
        m = memory.file_bytes(path)
        m["vram"] = {str(c): memory.vram_estimate(m["tensor_bytes"], shape, c, opts.batch) for c in opts.contexts}
        # the format's own runtime, e.g. what llama.cpp holds on CPU for a GGUF variant
        m.update(format_of_variant(path).serving_memory(path, json.loads((path / "config.json").read_text()),
                                                         tuple(opts.contexts)))
        return m

    timer = accuracy.Timer()
    log(f"reference {ref_dir}: {len(items)} items in {len(batches)} batches")
    with timer("load"):
        ref_model = loader.load_source(ref_dir)
    with timer("forward"):
        ref_passes = accuracy.run(ref_model, batches)
    n_tokens = sum(b.tokens for b in batches)
    ref_self = accuracy.self_metrics(ref_passes, batches)
    ref_correct = ref_self.pop("correct")
    reference = {"name": ref_dir.name, "path": str(ref_dir), "dtype": _dtype_label(ref_dir),
                 "memory": memory_of(ref_dir), "accuracy": ref_self, "seconds": timer.seconds,
                 "tokens_per_second": n_tokens / max(timer.seconds["forward"], 1e-9)}
    reference["memory"]["cuda"] = _cuda_measure(ref_model, batches, shape, memory) if use_cuda else None
    del ref_model

    rows = []
    for path in variant_dirs:
        t = accuracy.Timer()
        log(f"variant {path}")
        with t("load"):
            model = loader.load(path)
        with t("forward"):
            passes = accuracy.run(model, batches)
        with t("compare"):
            acc = accuracy.compare(ref_passes, passes, batches, model, top_k)
        acc.update(accuracy.self_metrics(passes, batches))
        acc["task"].update(accuracy.flips(ref_correct, acc.pop("correct")))
        acc["task_accuracy_drop"] = ref_self["task"]["accuracy"] - acc["task"]["accuracy"]
        mem = memory_of(path)
        mem["cuda"] = _cuda_measure(model, batches, shape, memory) if use_cuda else None
        rows.append({"name": path.name, "path": str(path), **_describe_variant(path), "memory": mem,
                     "accuracy": acc, "seconds": t.seconds,
                     "tokens_per_second": n_tokens / max(t.seconds["forward"], 1e-9)})
        log(f"  {mem['file_bytes'] / 1e6:.2f} MB  KL {acc['kl']['text']:.2e}  task {acc['task']['accuracy']:.3f}")
        del model, passes

    # KL where predictions are read: text positions (a VL model's outputs inside a picture are never
    # read; for a text model this is every position)
    pareto = {
        "kl": report.pareto_front([(r["name"], r["memory"]["file_bytes"], r["accuracy"]["kl"]["text"]) for r in rows]),
        "task": report.pareto_front([(r["name"], r["memory"]["file_bytes"], r["accuracy"]["task_accuracy_drop"])
                                     for r in rows]),
    }
    result = {
        "schema": report.SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quantkit_version": QUANTKIT_VERSION,
        "machine": _machine(),
        "eval": {"source": source if opts.eval else f"builtin:eval ({source})", "items": len(items),
                 "kinds": sorted({it.kind for it in items}, key=lambda k: [it.kind for it in items].index(k)),
                 "batches": len(batches),
                 "positions": {"text": int(sum((b.valid & ~b.vision).sum() for b in batches)),
                               "image": int(sum(b.vision.sum() for b in batches))}},
        "contexts": list(opts.contexts),
        "batch": opts.batch,
        "vram_formula": {"formula": _formula_text(), "assumptions": {
            "chunk_tokens": memory.CHUNK_TOKENS, "runtime_overhead_bytes": memory.RUNTIME_OVERHEAD_BYTES,
            "kv_bytes": memory.KV_BYTES, "activation_bytes": memory.ACT_BYTES,
            "max_image_patches (this model)": shape.max_image_patches}},
        "reference": reference,
        "variants": rows,
        "pareto": pareto,
        "real_ernie45_vl_28b": memory.real_28b_table(opts.contexts, opts.batch),
        **{key: table for fmt in {format_of_variant(p) for p in variant_dirs}
           for key, table in fmt.real_model_memory(tuple(opts.contexts)).items()},
        "notes": _notes(reference, rows),
    }
    report.write(result, out)
    return result


def _dtype_label(path: Path) -> str:
    dtypes = {i.dtype for i in Checkpoint.open(path).infos()}
    return ",".join(sorted(d.lower() for d in dtypes))


def _formula_text() -> str:
    doc = serving.__doc__
    start = doc.index("    VRAM = W")
    end = doc.index("The MoE term")
    return "\n".join(line[4:] for line in doc[start:end].rstrip().splitlines())


def _notes(reference: dict, rows: list[dict]) -> list[str]:
    notes = ["Bytes are exact (safetensors headers and file sizes); VRAM figures are estimates (formula above).",
             "Accuracy figures come from this run: every model evaluated teacher-forced in fp32 on the same "
             "batches; variants through quantkit.load (dequantized from their packed files).",
             "Task accuracy moves by single items on a few hundred questions and changes in both directions "
             "cancel out; KL, top-1 agreement and flips (items whose outcome changed) are the sensitive "
             "measures, task accuracy the one a user feels."]
    if reference["accuracy"]["task"]["accuracy"] < 0.5:
        notes.append("The reference's own task accuracy is low: this evaluation set probably does not fit this "
                     "model (task accuracy is only meaningful for the trained reference model).")
    return notes


def _cuda_measure(model, batches, shape, memory) -> dict | None:
    """Peak GPU memory of the model's evaluation forward on the largest batch, and the estimate for
    that run (the serving formula's terms for what this path holds): fp32 weights as loaded + fp32
    activations of all the batch's tokens at once (no chunking, no KV cache: use_cache=False) + the
    fp32 logits of every position + the ViT on the batch's patches."""

    batch = max(batches, key=lambda b: b.inputs["input_ids"].numel())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = batch.inputs["input_ids"].numel()
    images = int(batch.inputs["image_grid_thw"].prod(-1).sum()) if "image_grid_thw" in batch.inputs else 0
    estimate = (weights + tokens * shape.activation_values_per_token() * 4 + tokens * shape.vocab * 4
                + images * (4 * shape.vision_hidden + shape.vision_intermediate) * 4)

    def go(device):
        model.to(device)
        accuracy.run(model, [batch], device=device, keep_io=False)

    try:
        measured = memory.cuda_peak(go)
    finally:
        model.to("cpu")
    if measured is None:
        return None
    return {**measured, "estimate": estimate, "ratio": measured["peak_allocated"] / estimate}
