"""Transformers' contract for a GPTQ variant: quantkit's own loader (`quantkit.load`, transformers 5
classes) reads every module with the scheme the plan recorded, and the model loads with no missing or
unexpected keys. (Plain `from_pretrained` of a GPTQ-format MoE variant is no contract here: with
optimum + gptqmodel installed, transformers 5 keeps experts fused and optimum replaces only plain
Linear layers, so 4-bit variants fail with size mismatches and 8-bit ones load silently with randomly
initialised experts; measured, shared/notes/formats.md. The compressed-tensors format is the one plain
`from_pretrained` reads.)
"""
from __future__ import annotations

import torch

from ...adapters import adapter_for
from ...verdicts import Check, from_offenders, skipped
from .config import module_scheme
from .integrity import VariantFiles
from .reader import dequantized_state_dict

SRC_TF = "quantkit.load (quantkit/loader.py + formats/gptq/config.py module_scheme), transformers 5.25"


# -- transformers (quantkit.load) ------------------------------------------------------------------
def transformers_quant_config(v: VariantFiles) -> Check:
    """quantkit.load reads GPTQ v1 (`quant_method: gptq`, `checkpoint_format: gptq`): zero points are
    stored minus one; a `gptq_v2` file would be read one step off.
    Source: quantkit/loader.py dequantized_state_dict, shared/notes/formats.md."""
    q = v.qcfg or {}
    bad = []
    if q.get("quant_method") != "gptq":
        bad.append(f"quant_method {q.get('quant_method')!r}: quantkit.load reads 'gptq'")
    if q.get("checkpoint_format", "gptq") != "gptq":
        bad.append(f"checkpoint_format {q.get('checkpoint_format')!r}: quantkit.load reads GPTQ v1 ('gptq')")
    return from_offenders("transformers.quant_config", bad, "quantkit.load cannot read this quantization_config", SRC_TF)


def transformers_schemes(v: VariantFiles) -> Check:
    """Every quantized module resolves (GPTQModel semantics: base fields + first matching `dynamic` key
    on the checkpoint module name, `-:` = float) to the scheme the plan recorded and the files hold;
    a module the config skips or reads with other bits/groups would be mis-decoded or refused.
    Source: quantkit/formats/gptq/config.py module_scheme (used by quantkit.load)."""
    bad = []
    for module, pm in v.packed_modules().items():
        if pm.problems or not pm.bits:
            continue
        try:
            s = module_scheme(v.qcfg or {}, module)
        except (KeyError, ValueError, TypeError) as e:
            bad.append(f"{module}: quantization_config cannot be resolved ({e})")
            continue
        planned = v.planned_scheme(module)
        if s is None:
            bad.append(f"{module}: a `-:` dynamic rule skips it, but it is stored quantized")
            continue
        g = s.effective_group_size(pm.in_features)
        if s.bits != pm.bits or g != pm.group_size:
            bad.append(f"{module}: the config resolves {s.bits}-bit group {g}, the files hold {pm.bits}-bit "
                       f"group {pm.group_size}")
        elif planned is not None and (planned.sym, planned.desc_act) != (s.sym, s.desc_act):
            bad.append(f"{module}: the config resolves sym={s.sym} desc_act={s.desc_act}, the plan has "
                       f"sym={planned.sym} desc_act={planned.desc_act}")
    return from_offenders("transformers.schemes", bad, "quantkit.load would read these modules with another scheme",
                          SRC_TF)


def transformers_load(v: VariantFiles, max_bytes: int = 4 * 2**30) -> Check:
    """quantkit.load(variant) builds the transformers model with no missing, unexpected or mismatched
    keys, from exactly the tensors the plan names, and its logits on a short prompt are finite.
    Skipped (not failed) for variants whose dequantized fp32 weights would not fit `max_bytes`.
    Source: quantkit/loader.py load (transformers 5.24 from_pretrained, output_loading_info)."""

    cid = "transformers.load"
    total = sum(pm.in_features * pm.out_features * 4 for pm in v.packed_modules().values()
                if pm.in_features and pm.out_features) + sum(v.tensors[n].nbytes * 2 for n in v.plain_names())
    if total > max_bytes:
        return skipped(cid, f"loading needs ~{total / 2**30:.1f} GiB in fp32 (limit {max_bytes / 2**30:.0f} GiB); "
                            "the static checks above still apply", SRC_TF, optional=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    bad = []
    try:
        adapter = adapter_for(v.config, where=str(v.path / "config.json"))
        state = dequantized_state_dict(v.path)
        names = set(state)
        planned = set(v.plan)
        if names != planned:
            extra, missing = sorted(names - planned), sorted(planned - names)
            bad += [f"{n}: loaded but not in the plan" for n in extra[:20]]
            bad += [f"{n}: in the plan but not loaded" for n in missing[:20]]
        state = adapter.loadable_state(state)  # e.g. experts fused back as the Hub layout stores them
        model, info = adapter.model_class().from_pretrained(None, config=adapter.native_config(), state_dict=state,
                                                            dtype=torch.float32, output_loading_info=True)
        del state
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = [k for k in info.get(kind, []) if "inv_freq" not in str(k)]
            bad += [f"{kind.split('_')[0]} key {k}" for k in keys[:20]]
        ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]) % int(adapter.shape.vocab_size)
        with torch.no_grad():
            logits = model.eval()(input_ids=ids).logits
        if not torch.isfinite(logits).all():
            bad.append("non-finite logits on a short prompt")
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        bad.append(f"quantkit.load failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return from_offenders(cid, bad, "quantkit.load must reproduce the plan", SRC_TF)


def check_transformers(v: VariantFiles, load: bool = True) -> list[Check]:
    checks = [transformers_quant_config(v), transformers_schemes(v)]
    if load:
        checks.append(transformers_load(v))
    return checks

