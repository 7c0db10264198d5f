"""A byte-level BPE vocabulary (GPT-2 style: Qwen, ...) for llama.cpp, as convert_hf_to_gguf.py's
`_set_vocab_gpt2` / `get_vocab_base` writes it: `tokenizer.ggml.model = gpt2`, the family's pre-tokenizer
name (`tokenizer.ggml.pre`, e.g. "qwen2": llama.cpp then splits text with the regex of the source's
pre-tokenizer), every id up to config.vocab_size (missing ids as `[PADi]`, UNUSED), added tokens CONTROL
when special or special-looking (`<|...|>`), else USER_DEFINED, the rest NORMAL; merges, special ids,
add_bos/add_eos and the chat template through `gguf.SpecialVocab(load_merges=True)`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import gguf

from ...errors import CheckpointError


def _looks_special(token: str) -> bool:
    """convert_hf_to_gguf.py ModelBase.does_token_look_special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def bpe_tokens(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    vocab = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise CheckpointError(f"{model_dir}: token id {max(vocab.values())} beyond config.vocab_size {vocab_size}")
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tt = gguf.TokenType
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(tt.UNUSED))
            continue
        if token in added:
            if not decoder[i].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tok.decode(tok.encode(token, add_special_tokens=False))
            if decoder[i].special or _looks_special(token):
                types.append(int(tt.CONTROL))
            else:
                token = token.replace("\u2581", " ")
                types.append(int(tt.USER_DEFINED))
        else:
            types.append(int(tt.NORMAL))
        tokens.append(token)
    return tokens, types


def add_bpe_vocab(w: gguf.GGUFWriter, model_dir: Path, vocab_size: int, pre: str) -> None:
    tokens, types = bpe_tokens(Path(model_dir), vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    vocab_log = logging.getLogger("gguf.vocab")
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)
    try:
        special = gguf.SpecialVocab(Path(model_dir), load_merges=True, n_vocab=len(tokens))
        special.add_to_gguf(w, quiet=True)
    finally:
        vocab_log.setLevel(level)
    if not special.merges:
        raise CheckpointError(f"{model_dir}: tokenizer.json has no BPE merges; llama.cpp's gpt2 vocabulary needs them")
