"""What a compressed-tensors variant's model card says about its format: the name suffix
(`CT-W4A16-g128`), the Hub metadata (library transformers, tag compressed-tensors), the format line,
and which runtimes serve it and how, from the rules in contracts.py / transformers_rules.py and the
tests that prove them (tests/test_clients.py). quantkit.publish renders the rest of the card.
"""
from __future__ import annotations

from ...format import CardFacts, CardInput
from ...units import human_bytes
from .contracts import MIN_VLLM


def ct_card(manifest: dict, info: CardInput) -> CardFacts:
    s = info.scheme
    suffix = f"CT-W{s.bits}A16-{'ch' if s.group_size == -1 else f'g{s.group_size}'}" + ("-asym" if not s.sym else "")
    made_as = (f"A {s.bits}-bit (routed experts) quantization of {info.base_link}, made with quantkit {info.version} "
               f"by {info.algorithm} and written in the compressed-tensors format (`quant_method: compressed-tensors`, "
               "`format: pack-quantized`).")
    format_line = (f"- Format: compressed-tensors `pack-quantized`, {human_bytes(info.tensor_bytes)} of tensors in "
                   "safetensors shards under the base model's names (experts stay per expert): per module "
                   "`weight_packed` (int32), `weight_scale` (fp32, so every reader's dequantization is exact), "
                   "`weight_shape`" + ("" if s.sym else ", `weight_zero_point`") + "; `config.json` carries "
                   "`quantization_config` with one config group per scheme and `ignore` for every module kept "
                   "in float (routers also under vLLM's names).")
    where = info.repo or "ORG/NAME"
    return CardFacts(
        name_suffix=suffix, label="compressed-tensors", tags=["compressed-tensors"], library_name="transformers",
        made_as=made_as, format_line=format_line, runtime_lines=_runtime_lines(info),
        unverified_note="; the statements above come from the runtimes' loader code and quantkit's tests, not from "
                        "a run of this variant",
        index_lines=[f"vllm serve {where} --revision BRANCH --trust-remote-code   # vLLM >= {MIN_VLLM}"])


def _runtime_lines(info: CardInput) -> list[str]:
    s, text = info.scheme, info.scheme_text
    where = info.repo or "ORG/NAME"
    rev = f" --revision {info.revision}" if info.revision and info.revision != "main" else ""
    out: list[str] = []
    if info.repo is None:
        out += ["`ORG/NAME` below stands for the repository this variant is published in.", ""]
    kernel = "Marlin" if s.bits in (4, 8) else "Humming"
    if info.flavour == "native":
        out.append(f"**vLLM: not with this config.** vLLM >= {MIN_VLLM} serves compressed-tensors MoE experts at 2 to "
                   f"8 bits ({text} here), but this variant keeps its source's transformers-native config flavour "
                   f"(`model_type: {info.model_type}`), and vLLM's model code for this family reads only the "
                   "remote-code flavour (flat fields, `auto_map` and the repo's `*.py` files): quantize a base that has "
                   "it (e.g. the `-Thinking` repo) for vLLM.")
    else:
        out.append(f"**vLLM** (>= {MIN_VLLM}) serves compressed-tensors WNA16 MoE experts at 2 to 8 bits, symmetric or "
                   f"not; this variant's experts ({text}) run on its {kernel} kernels:")
        out += ["", "```bash", f"vllm serve {where}{rev} --trust-remote-code", "```", ""]
        if s.bits == 3:
            out.append("3-bit is the width vLLM's kernels have been proven on least, end to end.")
        out.append("vLLM needs a GPU for these kernels.")
    out.append("")
    if info.vision:
        out.append("**transformers `from_pretrained`: not for this model (transformers 5.25).** Its compressed-tensors "
                   "loader stacks this model's text and vision experts (of different widths) into one buffer shaped "
                   "like the first expert and dequantizes before the router transpose and the text/vision split: "
                   "three transformers bugs, not problems of these files (`quantkit verify` shows the failure; "
                   "compressed-tensors' own decompressor reads every tensor exactly). Use vLLM, or `quantkit.load` "
                   "below.")
    elif not s.sym:
        out.append("**transformers `from_pretrained`: not with asymmetric experts (transformers 5.25).** For fused MoE "
                   "experts its compressed-tensors loader passes no `weight_zero_point` to the decompressor "
                   "(\"Asymmetric quant requires zero-point values\"): a transformers bug, not a problem of these files "
                   "(compressed-tensors' own decompressor reads every tensor exactly). Use vLLM, `quantkit.load` below, "
                   "or a variant with symmetric experts.")
    else:
        out += ["**transformers** loads it with a plain `from_pretrained` (needs `pip install compressed-tensors`; the "
                "experts are decompressed while loading):", "", "```python",
                "from transformers import AutoModelForCausalLM",
                f"model = AutoModelForCausalLM.from_pretrained(\"{where}\"{', revision=' + repr(info.revision) if rev else ''})",
                "```", "",
                "quantkit's tests load compressed-tensors variants of a tiny model of this family this way at 4 and 2 "
                "bits (symmetric experts) with no missing or unexpected keys and logits equal to `quantkit.load`'s."]
    out += ["", "**transformers / quantkit** (evaluation on CPU): `quantkit.load(DIR)` returns the transformers model "
            "with every quantized weight unpacked from these files.", "",
            "**llama.cpp** does not read this format.", ""]
    return out
