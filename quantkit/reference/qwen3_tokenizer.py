"""Offline Qwen3-style tokenizer for the tiny Qwen3-MoE / Qwen3-VL-MoE reference checkpoints.

The Hub repos (``Qwen/Qwen3-30B-A3B``, ``Qwen/Qwen3-VL-30B-A3B-Instruct``) ship a byte-level BPE
(``vocab.json`` + ``merges.txt`` / ``tokenizer.json``, ``Qwen2Tokenizer``) with Qwen's pre-tokenizer
regex, NFC normalisation, no BOS, and ChatML special tokens. The Hub is not reachable here, so we train a
small byte-level BPE on the same built-in corpus as the ERNIE tokenizer (``quantkit.reference.tokenizer``)
with the real pre-tokenizer, and wrap it in transformers' own ``Qwen2Tokenizer``.

Token layout (mirrors the real vocabulary's order, scaled down): the 256 byte-level symbols and the
learned merges, then the added tokens in the real model's order (``<|endoftext|>`` is 151643 there and
comes first, ``<|im_start|>``, ``<|im_end|>``, ..., ``<|vision_start|>``, ``<|vision_end|>``,
``<|vision_pad|>``, ``<|image_pad|>``, ``<|video_pad|>``, then the non-special ``<tool_call>`` ...
``<think>``, ``</think>``).
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AddedToken, Qwen2Tokenizer

from quantkit.reference.tokenizer import CORPUS

# transformers/models/qwen2/tokenization_qwen2.py PRETOKENIZE_REGEX (llama.cpp: LLAMA_VOCAB_PRE_TYPE_QWEN2)
PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                     r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
BPE_VOCAB_SIZE = 1024
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# added but not special in the real tokenizer_config.json (decode keeps them)
PLAIN_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")

# The ChatML template of the Qwen3 repos, reduced to what calibration samples use: system/user/assistant
# turns, reasoning in <think>...</think>, and (Qwen3-VL) pictures as <|vision_start|><|image_pad|><|vision_end|>
# (videos with <|video_pad|>). The text model's generation prompt closes an empty <think> block unless
# `enable_thinking` (Qwen3's hybrid thinking; default on); the VL Instruct model does not think.
_CHAT_TEMPLATE = (
    "{%- set thinking = enable_thinking if enable_thinking is defined else true -%}"
    "{%- for message in messages -%}"
    "{%- if message.content is string -%}{%- set content = message.content -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}{%- for item in message.content -%}"
    "{%- if item.type == 'text' -%}{%- set ns.text = ns.text + item.text -%}"
    "{%- elif item.type in ['image', 'image_url'] -%}"
    "{%- set ns.text = ns.text + '<|vision_start|><|image_pad|><|vision_end|>' -%}"
    "{%- elif item.type in ['video', 'video_url'] -%}"
    "{%- set ns.text = ns.text + '<|vision_start|><|video_pad|><|vision_end|>' -%}"
    "{%- endif -%}{%- endfor -%}{%- set content = ns.text -%}{%- endif -%}"
    "{%- if message.role == 'assistant' and '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' -}}"
    "{%- else -%}{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "__THINK_PROMPT__"
    "{%- endif -%}"
)


def qwen3_chat_template(*, hybrid_thinking: bool) -> str:
    """The text model's template (hybrid thinking) or the VL Instruct model's (no thinking block)."""
    prompt = "{%- if not thinking -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}" if hybrid_thinking else ""
    return _CHAT_TEMPLATE.replace("__THINK_PROMPT__", prompt)


def train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny byte-level BPE (deterministic: fixed corpus, every byte in the alphabet)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(CORPUS * 8, trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges


def build_qwen3_tokenizer(out_dir: str | Path, chat_template: str, *, eos: str = "<|im_end|>") -> Qwen2Tokenizer:
    """Train the BPE, wrap it as ``Qwen2Tokenizer`` with Qwen3's added tokens, save it in ``out_dir``
    (``tokenizer.json``, ``tokenizer_config.json`` with the chat template) and return it reloaded."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe()
    # <|endoftext|> first (the constructor adds its special tokens), then the rest in the real order
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                         pad_token="<|endoftext|>", add_prefix_space=False, errors="replace",
                         model_max_length=131072, chat_template=chat_template)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    tok.eos_token = eos
    tok.save_pretrained(out_dir)
    return Qwen2Tokenizer.from_pretrained(out_dir)
