"""What a GPTQ variant's model card says about its format: the name suffix (`GPTQ-Int4-g128`), the
Hub metadata (library transformers), the format line, and which runtimes serve it and how (vLLM >= 0.34:
4/8-bit symmetric on gptq_marlin, 2/3-bit or asymmetric with `--quantization humming`; GPTQModel;
transformers through quantkit.load, and a warning against plain `from_pretrained`).
quantkit.publish renders the rest of the card around these facts.
"""
from __future__ import annotations

from ...format import CardFacts, CardInput
from ...units import human_bytes


def gptq_card(manifest: dict, info: CardInput) -> CardFacts:
    s = info.scheme
    suffix = f"GPTQ-Int{s.bits}-{'ch' if s.group_size == -1 else f'g{s.group_size}'}"
    suffix += ("-asym" if not s.sym else "") + ("-actorder" if s.desc_act else "")
    made_as = (f"A {s.bits}-bit (routed experts) quantization of {info.base_link}, made with quantkit {info.version} "
               f"by {info.algorithm} and written in the GPTQ checkpoint format (`quant_method: gptq`).")
    format_line = (f"- Format: GPTQ (`checkpoint_format: gptq`), {human_bytes(info.tensor_bytes)} of tensors in "
                   "safetensors shards; `config.json` carries `quantization_config` with `dynamic` rules for modules "
                   "that differ from the base scheme or stay unquantized.")
    return CardFacts(
        name_suffix=suffix, label="GPTQ", tags=["gptq"], library_name="transformers", made_as=made_as,
        format_line=format_line, runtime_lines=_runtime_lines(info),
        unverified_note="; the statements above come from the runtimes' documented kernels, not from a run of this "
                        "variant",
        index_lines=[f"vllm serve {info.repo or 'ORG/NAME'} --revision BRANCH --trust-remote-code   "
                     "# + --quantization humming for 2/3-bit or asymmetric variants (vLLM >= 0.34)"])


def _runtime_lines(info: CardInput) -> list[str]:
    """Which engines serve the variant and how, from the vLLM rules (contracts.py: vLLM >= 0.34) and the
    loaders' measured behaviour (tests/test_clients.py, shared/notes/formats.md)."""
    s, text = info.scheme, info.scheme_text
    out: list[str] = []
    where = info.repo or "ORG/NAME"
    rev = f" --revision {info.revision}" if info.revision and info.revision != "main" else ""
    remote = " --trust-remote-code" if info.remote_code else ""
    if info.repo is None:
        out.append("`ORG/NAME` below stands for the repository this variant is published in.")
        out.append("")
    marlin = s.bits in (4, 8) and s.sym
    humming = "" if marlin else " --quantization humming"
    kernels = ("its GPTQ Marlin MoE kernels (4 or 8 bits, symmetric; vLLM >= 0.32)" if marlin else
               f"its Humming kernels, which take {s.bits}-bit{'' if s.sym else ' asymmetric'} GPTQ experts with "
               "`--quantization humming` (vLLM >= 0.34)")
    if info.flavour == "native":
        out.append(f"**vLLM: not with this config.** vLLM serves these experts ({text}) on {kernels}, but this "
                   f"variant keeps its source's transformers-native config flavour (`model_type: {info.model_type}`), "
                   "and vLLM's ERNIE-4.5-VL model code reads only the remote-code flavour (`ernie4_5_moe_vl`: flat "
                   "fields, `auto_map` and the repo's `*.py` files): it fails on this one at "
                   "`hf_config.spatial_conv_size`. For vLLM, quantize a base that has the remote-code config (e.g. "
                   f"the `-Thinking` repo) and serve that variant with `vllm serve REPO --trust-remote-code{humming}`.")
    else:
        out.append(f"**vLLM** serves this variant's experts ({text}) on {kernels}:")
        out += ["", "```bash", f"vllm serve {where}{rev}{remote}{humming}", "```", ""]
        if info.flavour == "remote":
            out.append("The remote-code config flavour, `auto_map` and the `*.py` files of the base are kept, as "
                       "vLLM's ERNIE-4.5-VL code requires (hence `--trust-remote-code`).")
            out.append("")
        if s.bits == 3:
            out.append("3-bit is the width vLLM's Humming kernels have been proven on least, end to end.")
            out.append("")
        out.append("vLLM needs a GPU for these kernels (its CPU build runs GPTQ MoE only on AMX or ARM CPUs).")
    out.append("")
    silent = " and, at 8 bits, loads silently with randomly initialised experts" if s.bits == 8 else \
        " (8-bit variants even load silently with randomly initialised experts)"
    out.append("**transformers `from_pretrained`: do not use it on this variant.** With optimum and gptqmodel "
               "installed, transformers 5 keeps the MoE experts fused while optimum replaces only plain Linear "
               f"layers, so loading a GPTQ-format MoE checkpoint fails with size mismatches{silent}. For a plain "
               "`from_pretrained`, use the compressed-tensors variant of the same model "
               "(`quantkit quantize ... --format compressed-tensors`).")
    out.append("")
    if info.vision:
        out.append("**GPTQModel** (7.7) refuses this variant: it looks for the in-memory names "
                   "(`model.language_model.layers...`), not the Hub layout's.")
        out.append("")
        out.append("**llama.cpp**: not for this model — llama.cpp has the text-only ERNIE-4.5 MoE architecture but "
                   "no ERNIE-4.5-VL one.")
    else:
        out.append("**GPTQModel** (7.7, `GPTQModel.load`) decodes every quantized module of this format exactly "
                   "(tested on a tiny model of this family), but leaves `moe_statics.e_score_correction_bias` at zero "
                   "(its loader skips transformers' key rename), so it routes differently wherever that bias is "
                   "non-zero.")
        out.append("")
        out.append("**llama.cpp** (architecture `ernie4_5-moe`) after `quantkit export-gguf DIR`, which converts the "
                   "codes without requantizing where a GGML type holds the grid exactly (it refuses otherwise).")
    out.append("")
    out.append("**transformers / quantkit** (evaluation on CPU): `quantkit.load(DIR)` returns the transformers model "
               "with every quantized weight unpacked from these files (slow; memory of the unpacked model).")
    out.append("")
    return out
