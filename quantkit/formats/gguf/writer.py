"""The .gguf file of a MoE language model for llama.cpp, written with the `gguf` package (llama.cpp's own
Python library: GGUFWriter, constants, block sizes). The family's adapter declares the architecture
(`gguf_arch`), its hyper-parameters (`gguf_hparams`, what its converter in convert_hf_to_gguf.py writes),
what llama.cpp's graph cannot run (`gguf_problems`), the names the tensor map knows
(`gguf_tensor_source`), the vocabulary kind (`gguf_vocab`: SentencePiece "llama" or byte-level BPE
"gpt2", `vocab_bpe.py`) and a vision projector file beside the model (`gguf_projector`, `projector.py`).
Below, the text ERNIE-4.5 MoE (arch `ernie4_5-moe`) as the worked example.

What llama.cpp reads (src/models/ernie4-5.cpp `load_arch_hparams` / `load_arch_tensors`, and
conversion/ernie.py `Ernie4_5MoeModel` of the llama.cpp tree), from the source's config.json:
- `{arch}.block_count, context_length, embedding_length, feed_forward_length (dense layers),
  attention.head_count, head_count_kv, layer_norm_rms_epsilon, rope.freq_base`;
- `expert_count, expert_used_count, expert_feed_forward_length, expert_shared_count,
  expert_shared_feed_forward_length` (the shared experts' combined width, read from their tensors:
  without it llama.cpp leaves the shared-expert tensors unused and refuses the file),
  `leading_dense_block_count` (= moe_layer_start_index) and `interleave_moe_layer_step`. llama.cpp
  treats every layer from the first MoE layer on as MoE (step 1), so other layouts are refused;
- tensors by `gguf.get_tensor_name_map(arch, n_layers)` for the adapter's `gguf_arch`; the routed
  experts of a layer (roles `routed_expert`) stacked as `blk.N.ffn_{gate,up,down}_exps.weight` (numpy
  shape [E, out, in], expert order); the routing bias (role `router_bias`, ERNIE's
  `mlp.moe_statics.e_score_correction_bias` [1, E]) as `blk.N.exp_probs_b.bias` [E];
- the vocabulary from `tokenizer.model` (SentencePiece: pieces, scores, types incl. byte tokens),
  the added tokens of tokenizer.json (control if special, else user-defined), padded with `[PADi]`
  to config.vocab_size; special ids, chat template (`gguf.SpecialVocab`); whether a BOS/EOS is added
  (what the source's tokenizer.json does); `add_space_prefix` (what the source's tokenizer.json does
  to a plain word; without one, tokenizer_config's `add_prefix_space`, else the SentencePiece model's
  `add_dummy_prefix`); the end-of-turn id (generation_config's other
  EOS id, `<|end_of_sentence|>` for ERNIE) as `eot_token_id`.

The header, metadata and tensor table are written first (every size is known from the plan), then
tensor data in table order as the producer delivers it; a tensor that arrives early waits in memory,
or in a scratch file beside the output once more than `hold_bytes` wait. The file's size is
`predicted_file_bytes`: align32(header) + sum of align32(tensor bytes).
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ...errors import CheckpointError, PlanRefused, QuantkitError
from ...plan import Plan, TensorPlan
from .types import QUANT_TYPES, BlockWeight, encode, float_array, tensor_nbytes
from .vocab_bpe import add_bpe_vocab

ALIGN = gguf.GGUF_DEFAULT_ALIGNMENT
# llama.cpp's stacked routed-expert tensors, by projection
_EXPERT_TENSORS = {"gate": gguf.MODEL_TENSOR.FFN_GATE_EXP, "up": gguf.MODEL_TENSOR.FFN_UP_EXP,
                   "down": gguf.MODEL_TENSOR.FFN_DOWN_EXP}
# llama.cpp's file-type labels (general.file_type, the `-<type>` of the file name) by expert type.
FILE_TYPES = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
              "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1, "Q3_K": gguf.LlamaFileType.MOSTLY_Q3_K_M,
              "Q2_K": gguf.LlamaFileType.MOSTLY_Q2_K, "Q4_K": gguf.LlamaFileType.MOSTLY_Q4_K_M,
              "Q5_K": gguf.LlamaFileType.MOSTLY_Q5_K_M, "Q6_K": gguf.LlamaFileType.MOSTLY_Q6_K,
              "F16": gguf.LlamaFileType.MOSTLY_F16, "BF16": gguf.LlamaFileType.MOSTLY_BF16, "F32": gguf.LlamaFileType.ALL_F32}


def _pad(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class GGUFTensor:
    """One tensor of the file: its GGUF name, numpy-order shape, type and source members."""

    name: str
    shape: tuple[int, ...]
    type: str
    members: list[str]  # source tensor names; several for stacked experts (expert order)
    nbytes: int = 0

    def __post_init__(self):
        self.nbytes = tensor_nbytes(self.shape, self.type)

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """The uint8 shape GGUFWriter takes for raw blocks (last dimension in bytes)."""
        if self.type in QUANT_TYPES or self.type == "BF16":
            return (*self.shape[:-1], tensor_nbytes((self.shape[-1],), self.type))
        return self.shape


def expert_type(plan: Plan) -> str:
    """The routed experts' type: the variant's headline (file name, general.file_type)."""
    types = [e.storage for e in plan.entries if e.role.kind == "routed_expert"]
    return max(set(types), key=types.count) if types else "F32"


def model_arch(adapter, ckpt=None) -> gguf.MODEL_ARCH:
    """The llama.cpp architecture of the adapter's family (`Adapter.gguf_arch`), or PlanRefused."""
    by_name = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    if adapter.gguf_arch is not None and adapter.gguf_arch in by_name:
        return by_name[adapter.gguf_arch]
    if adapter.gguf_arch is None:
        why = adapter.gguf_unsupported or f"llama.cpp has no architecture for {adapter.family}"
    else:
        why = f"the installed gguf package has no architecture {adapter.gguf_arch!r}"
    raise PlanRefused(f"{getattr(ckpt, 'source', 'model')}: --format gguf: {why}; quantize this model in the "
                      "GPTQ format instead")


def check_architecture(adapter, ckpt=None) -> None:
    """The source must be a layout llama.cpp's graph for its architecture runs."""
    name = gguf.MODEL_ARCH_NAMES[model_arch(adapter, ckpt)]
    s, c = adapter.shape, adapter.text_fields()
    problems = adapter.gguf_problems()
    if problems:
        raise PlanRefused(f"config.json: {problems[0]}; a GGUF of this model would not run in llama.cpp")
    moe = list(s.moe_layers)
    if not moe or moe != list(range(moe[0], s.num_layers)):
        raise PlanRefused(f"config.json: MoE layers {moe[:3]}...{moe[-1:]} of {s.num_layers}; llama.cpp's {name} "
                          "treats every layer from moe_layer_start_index on as MoE (moe_layer_interval 1, "
                          "moe_layer_end_index the last layer)")
    rope = c.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise PlanRefused(f"config.json: rope_type {rope.get('rope_type')!r}; the {name} GGUF writer "
                          "supports the default RoPE only")


def projector_sources(adapter) -> set[str]:
    """Source tensors the family's vision projector file holds instead of the model's .gguf."""
    spec = adapter.gguf_projector()
    return {t.source for t in spec.tensors} if spec is not None else set()


def gguf_layout(plan: Plan, adapter) -> list[GGUFTensor]:
    """Every tensor of the file in file order: tensors outside the layers, then layer by layer,
    each layer's experts stacked at the place of their first member."""
    arch = model_arch(adapter)
    n_layers = adapter.shape.num_layers
    tmap = gguf.get_tensor_name_map(arch, n_layers)
    beside = projector_sources(adapter)  # the vision tower goes to the projector file

    def stacked(e: TensorPlan) -> bool:  # a routed expert's weight matrix: one slice of its layer's stack
        return e.role.kind == "routed_expert" and len(e.shape) == 2

    stacks: dict[tuple[int, str], list[tuple[int, TensorPlan]]] = {}
    for e in plan.entries:
        if stacked(e):
            stacks.setdefault((e.role.layer, e.role.proj), []).append((e.role.expert, e))
    out: list[GGUFTensor] = []
    done_stacks = set()

    def key(e: TensorPlan):
        return (-1 if e.role.layer is None else e.role.layer, e.name)

    for e in sorted(plan.entries, key=key):
        if e.name in beside:
            continue
        if stacked(e):
            layer, proj = e.role.layer, e.role.proj
            if (layer, proj) in done_stacks:
                continue
            done_stacks.add((layer, proj))
            members = [x for _, x in sorted(stacks[(layer, proj)], key=lambda kv: kv[0])]
            ids = sorted(k for k, _ in stacks[(layer, proj)])
            n_experts = adapter.shape.experts[e.role.modality]
            if ids != list(range(n_experts)):
                raise PlanRefused(f"layer {layer}: experts {ids[:5]}... for {proj}_proj, "
                                    f"expected 0..{n_experts - 1}")
            name = gguf.TENSOR_NAMES[_EXPERT_TENSORS[proj]].format(bid=layer) + ".weight"
            out.append(GGUFTensor(name, (len(members), *members[0].shape), e.storage, [x.name for x in members]))
            continue
        if e.role.kind == "router_bias":
            name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.FFN_EXP_PROBS_B].format(bid=e.role.layer) + ".bias"
            n = 1
            for d in e.shape:
                n *= d
            out.append(GGUFTensor(name, (n,), e.storage, [e.name]))
            continue
        mapped = tmap.get_type_and_name(adapter.gguf_tensor_source(e.name), try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise PlanRefused(f"tensor {e.name}: no llama.cpp {gguf.MODEL_ARCH_NAMES[arch]} tensor takes it")
        out.append(GGUFTensor(mapped[1], tuple(e.shape), e.storage, [e.name]))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise PlanRefused(f"two source tensors map to one GGUF tensor ({[n for n in names if names.count(n) > 1][0]})")
    return out


# -- metadata -------------------------------------------------------------------------------------

def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})")


def check_tokenizer(model_dir: Path, vocab: str = "llama") -> Path:
    if vocab == "gpt2":
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{model_dir}: no tokenizer.json; a GGUF for llama.cpp carries the byte-level BPE "
                                  "vocabulary and merges read from it")
        return path
    path = Path(model_dir) / "tokenizer.model"
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no tokenizer.model; a GGUF for llama.cpp carries the SentencePiece "
                            "vocabulary (pieces, scores, byte tokens) read from it")
    return path


def sentencepiece_vocab(model_dir: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int], bool]:
    """Tokens, scores, token types, padded to vocab_size; and the model's add_dummy_prefix."""
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    path = check_tokenizer(model_dir)
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a SentencePiece model ({e})")
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    tt = gguf.TokenType
    n = sp.vocab_size()
    if n > vocab_size:
        raise CheckpointError(f"{path}: {n} pieces, more than config.vocab_size {vocab_size}")
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-1000.0] * vocab_size
    types = [int(tt.UNUSED)] * vocab_size
    for i in range(n):
        kind = tt.NORMAL
        if sp.IsUnknown(i):
            kind = tt.UNKNOWN
        elif sp.IsControl(i):
            kind = tt.CONTROL
        elif sp.IsUnused(i):
            kind = tt.UNUSED
        elif sp.IsByte(i):
            kind = tt.BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode("utf-8"), float(sp.GetScore(i)), int(kind)
    added = _json(model_dir / "tokenizer.json").get("added_tokens") or []
    decoder = _json(model_dir / "tokenizer_config.json").get("added_tokens_decoder") or {}
    extra = {int(a["id"]): (a["content"], bool(a.get("special"))) for a in added}
    extra.update({int(i): (d["content"], bool(d.get("special"))) for i, d in decoder.items()})
    for i, (content, special) in sorted(extra.items()):
        if i < n:
            continue  # a SentencePiece piece: its type comes from the model
        if i >= vocab_size:
            raise CheckpointError(f"{model_dir}: added token {content!r} has id {i}, beyond config.vocab_size {vocab_size}")
        tokens[i] = content.encode("utf-8")
        scores[i] = -1000.0
        types[i] = int(tt.CONTROL if special else tt.USER_DEFINED)
    return tokens, scores, types, bool(proto.normalizer_spec.add_dummy_prefix)


def _adds_space_prefix(model_dir: Path, tok_cfg: dict, dummy_prefix: bool) -> bool:
    """Whether the source tokenizer puts "▁" before the first word: what its tokenizer.json does to a
    plain word (the fast tokenizer transformers loads); without one, an explicit `add_prefix_space`,
    else the SentencePiece model's `add_dummy_prefix`. (`add_prefix_space: null` means "the model's
    default", not false: writing false there made llama.cpp tokenize most lines differently.)"""
    path = model_dir / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        pieces = Tokenizer.from_file(str(path)).encode("a", add_special_tokens=False).tokens
        return bool(pieces) and pieces[0].startswith("\u2581")
    flag = tok_cfg.get("add_prefix_space")
    return flag if isinstance(flag, bool) else dummy_prefix


def _adds_special(model_dir: Path, bos: int | None, eos: int | None) -> tuple[bool, bool] | None:
    """Whether the source tokenizer puts a BOS before / an EOS after a plain text (tokenizer.json)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(path)).encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == bos, bool(ids) and ids[-1] == eos


def add_hparams(w: gguf.GGUFWriter, hparams: dict) -> None:
    """{`add_<key>` method of GGUFWriter: value}, in order (Adapter.gguf_hparams)."""
    for key, value in hparams.items():
        method = getattr(w, f"add_{key}", None)
        if method is None:
            raise QuantkitError(f"the installed gguf package has no GGUFWriter.add_{key}; upgrade gguf")
        method(value)


def hparam_keys(adapter) -> list[str]:
    """The GGUF keys (`{arch}.expert_count`, ...) the family's hyper-parameters are written under."""
    w = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[model_arch(adapter)])
    add_hparams(w, adapter.gguf_hparams())
    return [k for kv in w.kv_data for k in kv if not k.startswith("general.")]


def add_metadata(w: gguf.GGUFWriter, model_dir: Path, config: dict, adapter, plan: Plan, name: str) -> None:
    s = adapter.shape
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_quantized_by("quantkit")
    w.add_file_type(int(FILE_TYPES.get(expert_type(plan), gguf.LlamaFileType.GUESSED)))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hparams(w, adapter.gguf_hparams())
    shared = [e for e in plan.entries if e.role.kind == "shared_expert" and e.role.proj == "gate"]
    if s.shared_experts:
        if not shared:
            raise CheckpointError("config.json declares shared experts, but the checkpoint has no shared_experts tensors")
        w.add_expert_shared_feed_forward_length(int(shared[0].shape[0]))
    if adapter.gguf_vocab == "gpt2":  # byte-level BPE (tokenizer.json), as the converter's _set_vocab_gpt2
        add_bpe_vocab(w, model_dir, s.vocab_size, adapter.gguf_pre_tokenizer)
        return
    # vocabulary (SentencePiece)
    tokens, scores, types, dummy_prefix = sentencepiece_vocab(model_dir, s.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    vocab_log = logging.getLogger("gguf.vocab")  # it warns about token kinds GGUF has no key for (cls, ...)
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)
    try:
        special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(tokens))
        special.add_to_gguf(w, quiet=True)
    finally:
        vocab_log.setLevel(level)
    tok_cfg = _json(model_dir / "tokenizer_config.json")
    if "add_bos" not in special.add_special_token or "add_eos" not in special.add_special_token:
        adds = _adds_special(model_dir, special.special_token_ids.get("bos"), special.special_token_ids.get("eos"))
        if adds is None:  # no tokenizer.json: the config's flags, else LlamaTokenizer's defaults
            adds = (bool(tok_cfg.get("add_bos_token", True)), bool(tok_cfg.get("add_eos_token", False)))
        if "add_bos" not in special.add_special_token:
            w.add_add_bos_token(adds[0])
        if "add_eos" not in special.add_special_token:
            w.add_add_eos_token(adds[1])
    w.add_add_space_prefix(_adds_space_prefix(model_dir, tok_cfg, dummy_prefix))
    gen_eos = _json(model_dir / "generation_config.json").get("eos_token_id")
    eos = special.special_token_ids.get("eos")
    if isinstance(gen_eos, list):
        others = [int(i) for i in gen_eos if int(i) != eos]
        if len(others) == 1 and others[0] < len(tokens):
            w.add_eot_token_id(others[0])


# -- the file ---------------------------------------------------------------------------------------

class GGUFFile:
    """Write one .gguf: `add({source name: tensor or BlockWeight})` in any order, then `close()`."""

    def __init__(self, path: Path, model_dir: Path, config: dict, adapter, plan: Plan, name: str,
                 hold_bytes: int = 256 * 2**20):
        self.path = Path(path)
        self.layout = gguf_layout(plan, adapter)
        self.writer = gguf.GGUFWriter(self.path, gguf.MODEL_ARCH_NAMES[model_arch(adapter)])
        add_metadata(self.writer, Path(model_dir), config, adapter, plan, name)
        for t in self.layout:
            raw = gguf.GGMLQuantizationType[t.type]
            dtype = {"F32": np.float32, "F16": np.float16}.get(t.type, np.uint8)
            self.writer.add_tensor_info(t.name, t.byte_shape, np.dtype(dtype), t.nbytes,
                                        raw_dtype=None if t.type in ("F32", "F16") else raw)
        self.writer.write_header_to_file()
        self.writer.write_kv_data_to_file()
        self.writer.write_ti_data_to_file()
        self.header_bytes = self.path.stat().st_size
        self._where = {m: (i, j) for i, t in enumerate(self.layout) for j, m in enumerate(t.members)}
        self._parts: dict[int, dict[int, np.ndarray]] = {}
        self._ready: dict[int, np.ndarray | Path] = {}
        self._held = 0
        self._hold_bytes = hold_bytes
        self._next = 0
        self._scratch = None

    def add(self, group: dict) -> None:
        for source, value in group.items():
            if source not in self._where:
                raise ValueError(f"tensor {source} is not in the GGUF layout")
            i, j = self._where[source]
            t = self.layout[i]
            parts = self._parts.setdefault(i, {})
            if j in parts:
                raise ValueError(f"tensor {source} written twice")
            parts[j] = self._array(t, value)
            if len(parts) == len(t.members):
                del self._parts[i]
                arr = parts[0] if len(t.members) == 1 else np.stack([parts[k] for k in range(len(t.members))])
                self._ready[i] = self._hold(i, np.ascontiguousarray(arr.reshape(t.byte_shape)))
        self._flush()

    def _array(self, t: GGUFTensor, value) -> np.ndarray:
        if isinstance(value, BlockWeight):
            if value.type != t.type:
                raise ValueError(f"{t.name}: got {value.type} blocks, the layout says {t.type}")
            return encode(value)
        if t.type in QUANT_TYPES:
            raise ValueError(f"{t.name} is {t.type}; got a float tensor")
        return float_array(value.reshape(-1) if len(t.shape) == 1 else value, t.type)

    def _hold(self, i: int, arr: np.ndarray):
        """Keep a finished tensor until its turn: in memory, or in a scratch file once too much waits."""
        if i != self._next and self._held + arr.nbytes > self._hold_bytes:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix=".gguf-hold-", dir=self.path.parent))
            p = self._scratch / f"{i}.npy"
            np.save(p, arr)
            return p
        self._held += arr.nbytes
        return arr

    def _flush(self) -> None:
        while self._next in self._ready:
            arr = self._ready.pop(self._next)
            if isinstance(arr, Path):
                p, arr = arr, np.load(arr)
                p.unlink()
            else:
                self._held -= arr.nbytes
            self.writer.write_tensor_data(arr)
            self._next += 1

    def close(self) -> int:
        """Finish the file; returns its size. Raises if a tensor never arrived."""
        if self._next != len(self.layout):
            missing = self.layout[self._next]
            raise QuantkitError(f"internal: GGUF tensor {missing.name} was never produced "
                                f"({len(self.layout) - self._next} of {len(self.layout)} missing); please report this")
        self.writer.close()
        if self._scratch is not None:
            self._scratch.rmdir()
        return self.path.stat().st_size

    def abort(self) -> None:
        self.writer.close()
        if self._scratch is not None:
            for p in self._scratch.iterdir():
                p.unlink()
            self._scratch.rmdir()


def predicted_file_bytes(model_dir: Path, config: dict, adapter, plan: Plan, name: str) -> int:
    """The exact size of the .gguf `GGUFFile` writes for this plan: its header (metadata and tensor
    table, written to a scratch file by the same GGUFWriter calls) plus every tensor, 32-aligned."""
    layout = gguf_layout(plan, adapter)
    with tempfile.TemporaryDirectory() as tmp:
        f = GGUFFile(Path(tmp) / "header.gguf", model_dir, config, adapter, plan, name)
        header = f.header_bytes
        f.abort()
    return _pad(header) + sum(_pad(t.nbytes) for t in layout)


__all__ = ["FILE_TYPES", "GGUFFile", "GGUFTensor", "check_architecture", "check_tokenizer",
           "expert_type", "gguf_layout", "hparam_keys", "model_arch", "predicted_file_bytes", "projector_sources"]
