"""What a GGUF variant's model card says about its format: the name suffix (`GGUF-Q4_0`, the .gguf's own
suffix), the Hub metadata (library gguf, tag llama.cpp), the file, how llama.cpp serves it, and how
a variant converted from a GPTQ one (`quantkit export-gguf`) is reproduced. quantkit.publish renders
the rest of the card around these facts.
"""
from __future__ import annotations

from ...format import CardFacts, CardInput
from ...units import human_bytes


def gguf_card(manifest: dict, info: CardInput) -> CardFacts:
    g = manifest.get("gguf") or {}
    s = info.scheme
    made_as = (f"A {s.bits}-bit (routed experts, `{g.get('expert_type')}`) quantization of {info.base_link} for "
               f"llama.cpp, made with quantkit {info.version} by {info.algorithm} and written as one GGUF file "
               f"(architecture `{g.get('arch')}`): the codes the quantizer chose are the GGML blocks llama.cpp "
               "multiplies, without requantization.")
    total = info.tensor_bytes
    format_line = (f"- Format: GGUF, one file `{g.get('file')}` ({human_bytes(g.get('file_bytes') or total)}; "
                   f"{human_bytes(total)} of tensors), GGML type per role below; the source's `config.json` and "
                   "tokenizer files ride along for transformers-side evaluation.")
    exported = manifest.get("exported_from")
    reproduce = None
    if exported:  # made from a GPTQ variant: that variant's quantize, then export-gguf
        reproduce = [f"quantkit quantize {info.model}{info.model_revision} --profile {exported.get('profile')} "
                     "--out GPTQ-VARIANT",
                     f"quantkit export-gguf GPTQ-VARIANT --out {info.name}"]
    return CardFacts(
        name_suffix=f"GGUF-{g.get('expert_type', f'{s.bits}bit')}", label="GGUF", tags=["gguf", "llama.cpp"],
        library_name="gguf", made_as=made_as, format_line=format_line, runtime_lines=_runtime_lines(g, info),
        storage_types=True, reproduce_lines=reproduce)


def _runtime_lines(g: dict, info: CardInput) -> list[str]:
    fname = g.get("file", "MODEL.gguf")
    where = info.repo or "ORG/NAME"
    rev = f" --revision {info.revision}" if info.revision and info.revision != "main" else ""
    mmproj = (g.get("mmproj") or {}).get("file")
    files, serve = fname, f"llama-server -m {fname}"
    if mmproj:
        files, serve = f"{fname} {mmproj}", f"{serve} --mmproj {mmproj}"
    beside = ([f"The vision tower is in `{mmproj}` (llama.cpp's vision projector, "
               f"`{(g.get('mmproj') or {}).get('projector_type')}`): images go through llama.cpp's mtmd.", ""]
              if mmproj else [])
    return [f"**llama.cpp** (any CPU; architecture `{g.get('arch', 'ernie4_5-moe')}`) serves this file as it is:", "",
            "```bash", f"hf download {where}{rev} {files} --local-dir .", serve, "```", "", *beside,
            f"or `llama-cli -m {fname}`; the chat template, special tokens and end-of-turn token are in the file. "
            "Routers, router bias and norms are F32, as llama.cpp reads them. On an Intel CPU with AMX "
            "(Sapphire Rapids or later) add `--no-repack`: llama.cpp's AMX path segfaults on MoE models "
            "(ggml-org/llama.cpp#20824; measured with llama-cpp-python 0.3.36 on this file type and on "
            "llama.cpp's own Q3_K_M/Q4_K_M).", "",
            "**transformers / quantkit** (evaluation on CPU): `quantkit.load(DIR)` decodes the .gguf's blocks to "
            "the weights llama.cpp computes with and returns the transformers model.", "",
            "**vLLM** does not serve this file; use a GPTQ or compressed-tensors variant of the same model for vLLM "
            "(GPU).", ""]
