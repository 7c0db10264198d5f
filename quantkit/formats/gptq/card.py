"""What a GPTQ variant's model card says about its format: the name suffix (`GPTQ-Int4-g128`), the
Hub metadata (library transformers), the format line, and which runtimes serve it and how (vLLM's GPTQ
MoE kernels take 4 or 8 symmetric bits; GPTQModel; transformers through quantkit.load).
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
                     "# 4- and 8-bit variants only"])


def _runtime_lines(info: CardInput) -> list[str]:
    s, text = info.scheme, info.scheme_text
    out: list[str] = []
    where = info.repo or "ORG/NAME"
    rev = f" --revision {info.revision}" if info.revision and info.revision != "main" else ""
    remote = " --trust-remote-code" if info.remote_code else ""
    if info.repo is None:
        out.append("`ORG/NAME` below stands for the repository this variant is published in.")
        out.append("")
    vllm_ok = s.bits in (4, 8) and s.sym
    if vllm_ok and info.flavour == "native":
        out.append(f"**vLLM: not with this config.** The experts ({text}) are a scheme vLLM's GPTQ MoE "
                   f"kernels take (4 or 8 bits, symmetric), but this variant keeps its source's transformers-native "
                   f"config flavour (`model_type: {info.model_type}`), and vLLM's ERNIE-4.5-VL model code reads "
                   "only the remote-code flavour (`ernie4_5_moe_vl`: flat fields, `auto_map` and the repo's `*.py` "
                   "files): it fails on this one at `hf_config.spatial_conv_size`. For vLLM, quantize a base that "
                   "has the remote-code config (e.g. the `-Thinking` repo) and serve that variant with "
                   "`vllm serve REPO --trust-remote-code`.")
    elif vllm_ok:
        out.append(f"**vLLM** serves GPTQ MoE experts at 4 and 8 bits with a symmetric grid (gptq_marlin / "
                   f"moe_wna16 kernels), which is what this variant has ({text}):")
        out += ["", "```bash", f"vllm serve {where}{rev}{remote}", "```", ""]
        if info.flavour == "remote":
            out.append("The remote-code config flavour, `auto_map` and the `*.py` files of the base are kept, as "
                       "vLLM's ERNIE-4.5-VL code requires (hence `--trust-remote-code`).")
            out.append("")
        out.append("vLLM needs a GPU for these kernels (its CPU build runs GPTQ MoE only on AMX or ARM CPUs).")
    else:
        why = f"{s.bits}-bit" if s.bits not in (4, 8) else "asymmetric"
        out.append(f"**vLLM cannot serve this variant.** Its experts are {text}, and vLLM has no "
                   f"{why} GPTQ MoE kernel: its MoE paths take 4- or 8-bit symmetric experts only. Use a 4- or "
                   "8-bit variant for vLLM.")
        out.append("")
        out.append("Runtimes that could load it, none of them run by quantkit on this variant:")
        out.append(f"- **GPTQModel** reads {s.bits}-bit GPTQ checkpoints with per-module `dynamic` rules; whether "
                   "its kernels cover this model's MoE layers is untested.")
        if info.vision:
            out.append("- **llama.cpp** (after conversion to GGUF, e.g. Q2_K experts): not for this model — "
                       "llama.cpp has the text-only ERNIE-4.5 MoE architecture but no ERNIE-4.5-VL one.")
        else:
            out.append("- **llama.cpp** after conversion to GGUF (architecture `ernie4_5-moe`; 2-bit experts as "
                       "Q2_K). The conversion is a separate step, not part of this repository.")
    out.append("")
    out.append("**transformers / quantkit** (evaluation on CPU): `quantkit.load(DIR)` returns the transformers model "
               "with every quantized weight unpacked from these files (slow; memory of the unpacked model).")
    out.append("")
    return out
