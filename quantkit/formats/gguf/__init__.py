"""The GGUF format: one llama.cpp file per variant (the family's adapter names the arch: `ernie4_5-moe`,
`qwen3moe`, `qwen3vlmoe`), plus a vision projector file (mmproj) for vision-language families.

One job per module:
- `types.py`    scheme <-> GGML type and the exactness rules; block encoders/decoders; byte sizes
- `q2k.py`      the fixed grids GPTQ does not choose itself (K-quants, Q4_1) and GPTQ/RTN on them
- `backend.py`  how the quantize pipeline solves and emits weights for a GGUF plan
- `writer.py`   the .gguf file: hyper-parameters, vocabulary, tensor names, experts stacked per layer
- `variant.py`  the variant directory (.gguf + side files + quantkit.json), atomically
- `reader.py`   a GGUF variant read back: blocks, dequantized weights by source name
- `export.py`   `quantkit export-gguf`: an existing GPTQ variant whose schemes map exactly
- `vocab_bpe.py` a byte-level BPE vocabulary (gpt2 kind: Qwen) as llama.cpp's converter writes it
- `projector.py` the vision projector file (mmproj) beside a VL model's .gguf, written and read back
- `memory.py`   bytes by role from the file(s), llama.cpp RAM, the real ERNIE-4.5-21B-A3B table
- `verify.py`   `quantkit verify` for GGUF variants (file facts, llama.cpp, quantkit.load)
- `card.py`     what the model card says about the file and llama.cpp
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...errors import ProfileError
from ...format import Format
from ...plan import TensorPlan
from ...roles import EMBEDDING, LM_HEAD
from .backend import GGUFBackend
from .card import gguf_card
from .export import export_gguf
from .memory import LlamaShape, file_bytes, llama_cpp_ram, real_21b_table
from .reader import dequantized_state_dict
from .types import QUANT_TYPES, check_stacked_experts, gguf_tensor_type, known_types_text, tensor_nbytes
from .variant import FORMAT_NAME, check_source, gguf_file, write_gguf_variant
from .verify import verify_gguf
from .writer import check_architecture


class GGUFFormat(Format):
    name = FORMAT_NAME
    description = "one llama.cpp file (+ vision projector for VL families)"
    profile_suffix = "-gguf"
    rule_keys = frozenset({"gguf_type"})
    runtimes = ("llama.cpp", "transformers")

    def rule_fields(self, raw: dict, where: str) -> dict:
        """`gguf_type: Q4_K` -> the bits / group_size / sym (and scale_bits, K-quants) that type stores;
        explicit fields must agree."""
        if "gguf_type" not in raw:
            return raw
        t = QUANT_TYPES.get(str(raw["gguf_type"]))
        if t is None:
            raise ProfileError(f"{where}: unknown gguf_type {raw['gguf_type']!r}; quantized types: "
                               f"{known_types_text()} (keep a tensor with `keep: true`)")
        implied = {"bits": t.bits, "group_size": t.group, "sym": t.sym}
        for key, value in implied.items():
            if key in raw and raw[key] != value:
                raise ProfileError(f"{where}: gguf_type {t.name} is {t.label}, but the rule says {key}: {raw[key]}")
        return {**raw, **implied, "scale_bits": t.scale_bits}

    def check_adapter(self, adapter, ckpt=None) -> None:
        check_architecture(adapter, ckpt)

    def check_source(self, ckpt, adapter) -> None:
        check_source(ckpt, adapter)

    def quantizable(self, role, shape, name) -> bool:
        # llama.cpp reads quantized token embeddings and output heads too
        return super().quantizable(role, shape, name) or (role.kind in (EMBEDDING, LM_HEAD) and len(shape) == 2)

    def plan_tensor(self, info, role, scheme, adapter) -> TensorPlan:
        storage = gguf_tensor_type(info, role, scheme)
        return TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, scheme,
                          tensor_nbytes(info.shape, storage), storage=storage)

    def check_plan(self, entries, force, notes) -> None:
        check_stacked_experts(entries)

    def candidate_schemes(self, base):
        """Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, the base's method kept. Q4_0 and Q4_1 are aside: Q4_K
        stores 4 bits in Q4_0's bytes (Q4_1's are larger) with ~0.7x its round-to-nearest error."""
        return tuple(replace(base, bits=t.bits, group_size=t.group, sym=t.sym, scale_bits=t.scale_bits)
                     for t in sorted(QUANT_TYPES.values(), key=lambda t: t.bits) if t.name not in ("Q4_0", "Q4_1"))

    def backend(self) -> GGUFBackend:
        return GGUFBackend()

    def write_variant(self, ckpt, plan, produce, out, *, overwrite=False, max_shard_bytes=0, extra=None,
                      resume=False, run=None) -> Path:
        return write_gguf_variant(ckpt, plan, produce, out, overwrite=overwrite, extra=extra, resume=resume, run=run)

    def dequantized_state_dict(self, variant: Path) -> dict:
        return dequantized_state_dict(variant)

    def file_bytes(self, variant: Path) -> dict:
        return file_bytes(variant)

    def check_variant(self, variant: Path) -> None:
        gguf_file(variant)

    def serving_memory(self, variant: Path, config: dict, contexts: tuple[int, ...]) -> dict:
        """What llama.cpp holds on CPU at each context (memory.llama_cpp_ram)."""
        shape = LlamaShape.from_config(config)
        weights = file_bytes(variant)["tensor_bytes"]
        return {"llama_cpp_ram": {str(c): llama_cpp_ram(weights, shape, c) for c in contexts}}

    def real_model_memory(self, contexts: tuple[int, ...]) -> dict:
        """Predicted file sizes and llama.cpp RAM of the shipped GGUF profiles for the real
        ERNIE-4.5-21B-A3B, next to its public GGUFs."""
        return {"real_ernie45_21b_gguf": real_21b_table(contexts)}

    def verify(self, variant, runtimes, source, *, load: bool):
        return verify_gguf(variant, runtimes, source, load=load)

    def convert(self, variant, out, *, overwrite: bool, log) -> Path:
        return export_gguf(variant, out, overwrite=overwrite, log=log)

    def card(self, manifest, info):
        return gguf_card(manifest, info)


FORMAT = GGUFFormat()
