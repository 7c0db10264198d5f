"""Transformers' contract for a compressed-tensors variant: plain `from_pretrained` (transformers 5.25's
compressed-tensors quantizer, which decompresses fused MoE experts while loading) builds the model with
no missing or unexpected keys and the logits quantkit.load gives.

  quantizer_compressed_tensors.py  transformers/quantizers/quantizer_compressed_tensors.py
                                   (CompressedTensorsHfQuantizer: apply_quantization_config on nn.Linear
                                   modules, CompressedTensorsDequantize on the fused experts)
  compressed_tensors.py            transformers/integrations/compressed_tensors.py (get_experts_scheme:
                                   ONE scheme for every routed expert of the model, the first config group
                                   with a `re:` target containing "experts"; the stacked buffer is shaped
                                   like the first expert; its DummyModule carries no zero point)
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
from pathlib import Path

import torch

from ...adapters import adapter_for
from ...verdicts import Check, from_offenders, passed, skipped
from .config import scheme_of_args
from .contracts import routed_expert_modules
from .integrity import CTVariant

SRC_TF = ("transformers 5.25 quantizers/quantizer_compressed_tensors.py + integrations/compressed_tensors.py "
          "(CompressedTensorsDequantize, get_experts_scheme)")
SRC_VL = SRC_TF + " + core_model_loading.py; shared/notes/formats.md (three transformers bugs)"
MAX_DLOGIT = 1e-4


def transformers_quant_config(v: CTVariant) -> Check:
    """transformers' CompressedTensorsConfig and compressed-tensors' ModelCompressor accept the config
    (the quantizer needs the compressed-tensors package)."""
    try:
        from transformers.utils.quantization_config import CompressedTensorsConfig

        CompressedTensorsConfig.from_dict(dict(v.config.get("quantization_config") or {}))
    except Exception as e:  # noqa: BLE001 - any refusal is the finding
        return from_offenders("transformers.quant_config", [f"{e.__class__.__name__}: {str(e).splitlines()[0]}"],
                              "transformers cannot read this quantization_config", SRC_TF)
    return passed("transformers.quant_config", SRC_TF)


def transformers_experts_scheme(v: CTVariant) -> Check:
    """Every routed expert is read with the scheme of `get_experts_scheme`'s group, so all routed experts
    must share one scheme and that group must hold it (a profile mixing expert widths per layer is
    servable by vLLM, not loadable by transformers)."""
    from transformers.integrations.compressed_tensors import get_experts_scheme

    experts = routed_expert_modules(v)
    if not experts:
        return passed("transformers.experts_scheme", SRC_TF, "no quantized routed experts")
    stored = {}
    for m in experts:
        stored.setdefault(v.codes.scheme(m), m)
    read = scheme_of_args(get_experts_scheme(v.codes.config).weights)
    bad = [f"{m}: {s.label.split('-', 1)[1]}, transformers reads every routed expert as {read.label.split('-', 1)[1]}"
           for s, m in stored.items() if s != read]
    return from_offenders("transformers.experts_scheme", bad, "transformers decompresses all routed experts with "
                          "one scheme", SRC_TF)


def transformers_experts_symmetric(v: CTVariant) -> Check:
    """Routed experts must be symmetric: for fused experts transformers' CompressedTensorsDequantize
    hands the decompressor only weight_packed/weight_scale/weight_shape (its DummyModule has no zero
    point), so asymmetric experts fail with "AssertionError: Asymmetric quant requires zero-point
    values" (measured: tests/test_clients.py). Dense modules (attention, shared experts) go through the
    general converter, which passes the zero point: those may be asymmetric."""
    bad = [f"{m}: asymmetric ({v.codes.scheme(m).label.split('-', 1)[1]})" for m in routed_expert_modules(v)
           if not v.codes.scheme(m).sym]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    if bad:
        return from_offenders("transformers.experts_symmetric", bad[:1], f"transformers 5.25 loses the experts' zero "
                              f"points{more}: from_pretrained fails; use quantkit.load or vLLM", SRC_TF)
    return passed("transformers.experts_symmetric", SRC_TF)


def transformers_moe_layout(v: CTVariant) -> Check:
    """One routed-expert modality per MoE layer. ERNIE-4.5-VL keeps text and vision experts (of different
    widths) in one `mlp.experts` list with its routers stored transposed, and transformers 5.25's loader
    fails there: CompressedTensorsDequantize allocates the stacked buffer from the first expert's shape,
    and the dequantize step it prepends to every `.weight` converter runs before the router's Transpose
    and the text/vision split ("Undefined Operation encountered!"). Three transformers bugs, not file
    problems (tests/test_clients.py pins the failures)."""
    adapter = adapter_for(v.config, where=str(v.path / "config.json"))
    experts = adapter.shape.experts
    if len(experts) > 1:
        widths = adapter.shape.expert_intermediate
        return from_offenders("transformers.moe_layout", [
            f"{' and '.join(experts)} experts in one MoE layer (widths {dict(widths)}), routers stored transposed"],
            "transformers 5.25 cannot load it with from_pretrained; use quantkit.load or vLLM", SRC_VL)
    return passed("transformers.moe_layout", SRC_VL)


def _ids(adapter) -> torch.Tensor:
    return torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]) % int(adapter.shape.vocab_size)


class _Report(logging.Handler):
    """Collects what transformers logs while loading (its loading report names every failed conversion)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines += record.getMessage().splitlines()


def load_with_transformers(variant: Path, dtype=torch.float32):
    """`from_pretrained(DIR)` of the family's transformers class, as a user runs it (the remote-code
    config flavour is translated to the native one, carrying `quantization_config`). Returns
    (model, loading info); a failed weight conversion raises RuntimeError naming each failure from
    transformers' loading report (`Error: <op> on tensors destined for <param>` and its exception)."""
    config = json.loads((variant / "config.json").read_text())
    adapter = adapter_for(config, where=str(variant / "config.json"))
    native = adapter.native_config()
    native.quantization_config = config.get("quantization_config")
    report = _Report()
    logger, matcher = logging.getLogger("transformers"), logging.getLogger("compressed_tensors")
    handlers, level = logger.handlers[:], matcher.level
    logger.handlers = [report]  # the loading report is read here, not printed
    matcher.setLevel(logging.ERROR)  # "Could not match `re:...experts...`": experts are not nn.Linear there
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # compressed-tensors' progress bars
            return adapter.model_class().from_pretrained(str(variant), config=native, dtype=dtype,
                                                         output_loading_info=True)
    except RuntimeError as e:
        failures = []
        for i, line in enumerate(report.lines):
            if line.startswith("Error: "):
                cause = next((x for x in reversed(report.lines[:i]) if re.match(r"^\w+(Error|Exception): ", x)), "")
                failures.append(f"{line[len('Error: '):].split('. Ckpt contains')[0]} ({cause})")
        if not failures:
            raise
        raise RuntimeError(f"{str(e).splitlines()[0].split('.')[0]}: " + "; ".join(failures)) from e
    finally:
        logger.handlers = handlers
        matcher.setLevel(level)


def transformers_load(v: CTVariant, max_bytes: int = 4 * 2**30) -> Check:
    """`from_pretrained(DIR)` loads with no missing/unexpected/mismatched keys and its logits on a short
    prompt equal quantkit.load's within 1e-4 (both fp32). Skipped (not failed) for variants whose fp32
    weights would not fit `max_bytes` twice."""
    from transformers.utils import logging as hf_logging

    from ...loader import load

    cid = "transformers.load"
    ckpt = v.codes.ckpt
    kept = sum(4 * ckpt.info(n).numel for n in v.codes.kept)
    total = 2 * (kept + sum(4 * math.prod(v.codes.weight_shape(m)) for m in v.codes.modules))  # fp32, two models
    if total > max_bytes:
        return skipped(cid, f"loading twice needs ~{total / 2**30:.1f} GiB in fp32 (limit {max_bytes / 2**30:.0f} "
                            "GiB); the static checks above still apply", SRC_TF, optional=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    bad = []
    try:
        adapter = adapter_for(v.config, where=str(v.path / "config.json"))
        model, info = load_with_transformers(v.path)
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = [k for k in info.get(kind, []) if "inv_freq" not in str(k)]
            bad += [f"{kind.split('_')[0]} key {k}" for k in keys[:20]]
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):  # the first forward decompresses (bars)
            ours = load(v.path)(input_ids=_ids(adapter)).logits
            theirs = model.eval()(input_ids=_ids(adapter)).logits
        d = (ours - theirs).abs().max().item()
        if not d <= MAX_DLOGIT:
            bad.append(f"max |logit - quantkit.load's| = {d:.3g} > {MAX_DLOGIT:g}")
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        bad.append(f"from_pretrained failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return from_offenders(cid, bad, "transformers' from_pretrained must give quantkit.load's model", SRC_TF)


def check_transformers(v: CTVariant, load: bool = True) -> list[Check]:
    if v.codes is None:
        return [skipped("transformers.files", f"the variant cannot be read: {v.problem}")]
    checks = [transformers_quant_config(v), transformers_experts_scheme(v), transformers_experts_symmetric(v),
              transformers_moe_layout(v)]
    if load:
        checks.append(transformers_load(v))
    return checks
