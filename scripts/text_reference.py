"""WORK IN PROGRESS (issue 15; kept in scripts/ until it meets its targets and ships weights: it
imports quantkit.api to measure itself, which quantkit/reference/ may not). A small ERNIE-4.5 text
MoE that has memorised a table: the text reference for accuracy measurements.

The real ``Ernie4_5_MoeForCausalLM`` (dense first layer, MoE layers with routed and one shared expert,
the offline SentencePiece tokenizer of ``quantkit.reference.tokenizer``), every weight row a multiple
of 256 so llama.cpp's K-quants apply. Its task: a synthetic key -> value table (``facts``: distinct
``KEY_DIGITS``-digit keys, random ``VALUE_DIGITS``-digit values, deterministic from
``TextTrainConfig.table_seed``), asked as a chat turn
``<|begin_of_sentence|>User: 482\\nAssistant: 739105<|end_of_sentence|>`` and scored by exact match of the
whole value (teacher-forced argmax = greedy decoding), so a few wrong digits lose the fact.
Nothing about a value can be inferred from its key, so every pair must be stored in the weights, as the facts a real model knows
are: quantization error that moves a weight moves some fact, and the model reacts to low-bit
quantization the way real models do (RTN 2-bit collapses, 4-bit barely moves) instead of shrugging it
off as a model with spare capacity does.

Splits: every pair is trained. ``eval`` and ``calib`` are disjoint deterministic subsets of the table
(queries of memorised pairs, as "what is the capital of France" queries a fact a real model learned);
the calibration set is written by ``write_calibration_jsonl`` in the samples JSONL format.

Status (not shipped yet: the properties are not all met). Best attempt, 05:18-05:31 UTC on one
thread (AVX512, torch 2.14.1): the defaults below (600 facts, 3-digit keys, 6-digit values, 5000 steps
of 32, lr 1.5e-3), 765 s in all (4.6 M parameters, 9.2 MB in bf16); the loss sits at chance until
~step 2500, then drops. Held-out 300 queries: fp 87.3 %, RTN w4 87.7 % (+0.3), RTN w2 75.3 % (-12.0),
GPTQ w2 (256 calibration pairs)
88.0 % (recovers all of it). Earlier probes: 200 facts x 2-digit values learns in 300 steps but is
untouched even by RTN w2 (100 % everywhere: far below capacity); 1000 facts do not leave the plateau
within 1500 steps; 600 facts with 4 experts and lr 2e-3 were still at chance at step 3300 of 5000
(fewer routed parameters delay the break-out). Next: more facts per parameter (fewer experts or
top-1, or 4-digit keys with ~1000 facts) and a longer schedule (~7000 steps, ~18 min), so fp passes 90 % and RTN w2 loses more.

Determinism: one thread, fp32 training, fixed seeds; the shipped weights are bf16 and carry their
sha256 and training record in ``trained_text/README.md``.
"""
from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import Ernie4_5_MoeConfig, Ernie4_5_MoeForCausalLM

from quantkit.reference.tiny import ROPE_THETA, _set_generation_ids, _special_ids
from quantkit.reference.tokenizer import TEXT_CHAT_TEMPLATE, build_ernie_tokenizer, padded_vocab_size
from quantkit.reference.trained import RouterLoad

TRAINED_TEXT_DIR = Path(__file__).resolve().parent.parent / "quantkit" / "reference" / "trained_text"
WEIGHTS = "model.safetensors"
TRAINED_TEXT_SHA256 = ""

TEXT_SIZES = {
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "intermediate_size": 256,
    "moe_num_experts": 8,
    "moe_k": 2,
    "moe_intermediate_size": 256,
    "moe_num_shared_experts": 1,
}
KEY_DIGITS = 3
VALUE_DIGITS = 6
SPLIT_SEEDS = {"eval": 77003, "calib": 91009}


@dataclass(frozen=True)
class TextTrainConfig:
    facts: int = 600
    steps: int = 5000
    batch_size: int = 32
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.02
    warmup: int = 50
    weight_decay: float = 0.0
    bias_update: float = 2e-3
    seed: int = 0
    table_seed: int = 20261207


def text_config(tokenizer, sizes: dict = TEXT_SIZES) -> Ernie4_5_MoeConfig:
    s = sizes
    return Ernie4_5_MoeConfig(
        vocab_size=padded_vocab_size(tokenizer), hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"], num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"], num_key_value_heads=s["num_key_value_heads"],
        max_position_embeddings=131072, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        moe_num_experts=s["moe_num_experts"], moe_k=s["moe_k"], moe_intermediate_size=s["moe_intermediate_size"],
        moe_num_shared_experts=s["moe_num_shared_experts"], moe_layer_start_index=1,
        moe_layer_end_index=s["num_hidden_layers"] - 1, moe_layer_interval=1, moe_use_aux_free=True,
        use_bias=False, tie_word_embeddings=True, **_special_ids(tokenizer))


# -- the table -------------------------------------------------------------------------------------

def facts(n: int, table_seed: int) -> list[tuple[str, str]]:
    """``n`` (key, value) pairs: distinct 4-digit keys, random 3-digit values."""
    rng = random.Random(table_seed)
    keys = rng.sample(range(10 ** KEY_DIGITS), n)
    return [(f"{k:0{KEY_DIGITS}d}", f"{rng.randrange(10 ** VALUE_DIGITS):0{VALUE_DIGITS}d}") for k in keys]


def split(table: list[tuple[str, str]], name: str, n: int) -> list[tuple[str, str]]:
    """``n`` pairs of the ``eval`` or ``calib`` split: disjoint, deterministic subsets of the table."""
    order = list(range(len(table)))
    random.Random(SPLIT_SEEDS["eval"]).shuffle(order)
    half = len(order) // 2
    chosen = order[:half] if name == "eval" else order[half:]
    return [table[i] for i in chosen[:n]]


def messages(key: str, value: str | None) -> list[dict]:
    turns = [{"role": "user", "content": key}]
    if value is not None:
        turns.append({"role": "assistant", "content": value})
    return turns


def write_calibration_jsonl(pairs: list[tuple[str, str]], path: str | Path) -> Path:
    """The calibration samples JSONL (``quantkit calibrate --samples``): one conversation per pair."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": f"kv-{i}", "kind": "fact", "lang": "en", "messages": messages(k, v)})
             for i, (k, v) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def encode(tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, int, int]:
    """Token ids [N, T] of the full conversations, the index of the first answer token and its length
    (all conversations have the same length: digits are single tokens)."""
    rows = []
    for key, value in pairs:
        text = tokenizer.apply_chat_template(messages(key, value), tokenize=False)
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    head = tokenizer.apply_chat_template(messages(pairs[0][0], None), tokenize=False, add_generation_prompt=True)
    start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    if len({len(r) for r in rows}) != 1:
        raise ValueError("conversations of different lengths")
    return torch.tensor(rows), start, len(rows[0]) - start


def answer_correct(model, ids: torch.Tensor, start: int, length: int, batch: int = 512) -> torch.Tensor:
    """Teacher-forced exact match of the answer (value digits + end of sentence) = greedy decoding."""
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            chunk = ids[i: i + batch]
            logits = model(input_ids=chunk).logits[:, start - 1: start - 1 + length]
            out.append((logits.argmax(-1) == chunk[:, start: start + length]).all(-1))
    return torch.cat(out)


def evaluate(model, tokenizer, pairs: list[tuple[str, str]]) -> dict:
    ids, start, length = encode(tokenizer, pairs)
    correct = answer_correct(model, ids, start, length)
    return {"accuracy": round(correct.float().mean().item(), 4), "items": len(pairs)}


# -- training --------------------------------------------------------------------------------------

def build_model(tokenizer, seed: int) -> Ernie4_5_MoeForCausalLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Ernie4_5_MoeForCausalLM(text_config(tokenizer))
        # transformers leaves the router at zero (every expert ties): start it small and random.
        for m in model.modules():
            if type(m).__name__ == "Ernie4_5_MoeTopKRouter":
                torch.nn.init.normal_(m.weight, std=0.02)
    _set_generation_ids(model, tokenizer)
    return model


def train(model, tokenizer, cfg: TextTrainConfig, log: Callable[[str], None] = print,
          probe: Callable[[int], None] | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    table = facts(cfg.facts, cfg.table_seed)
    ids, start, length = encode(tokenizer, table)
    targets = ids[:, 1:].clone()
    targets[:, : start - 1] = -100  # loss on the answer (value digits and end of sentence) only
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    load = RouterLoad(model, router_class="Ernie4_5_MoeTopKRouter")
    gen = torch.Generator().manual_seed(cfg.seed)
    order, pos, losses, t0 = torch.randperm(len(ids), generator=gen), 0, [], time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(ids):
            order, pos = torch.randperm(len(ids), generator=gen), 0
        idx = order[pos: pos + cfg.batch_size]
        pos += cfg.batch_size
        warm = min(1.0, (step + 1) / cfg.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)
        logits = model(input_ids=ids[idx]).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        load.update_bias(cfg.bias_update)
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"step {step + 1}: loss {sum(losses[-50:]) / 50:.4f} ({time.perf_counter() - t0:.0f} s)")
            if probe is not None:
                model.eval()
                probe(step + 1)
                model.train()
    load.close()
    model.eval()
    return {"train_seconds": round(time.perf_counter() - t0, 1),
            "loss_every_100": [round(sum(losses[i: i + 100]) / len(losses[i: i + 100]), 4)
                               for i in range(0, len(losses), 100)]}


def build_trained_text_reference(out_dir: str | Path, cfg: TextTrainConfig = TextTrainConfig(),
                                 log: Callable[[str], None] = print, eval_items: int = 300) -> Path:
    """Train the text reference and save it (bf16 safetensors, config, tokenizer, card)."""
    from quantkit.loader import load_source
    from quantkit.manifest import sha256_file

    out_dir = Path(out_dir)
    torch.set_num_threads(1)
    started = time.perf_counter()
    tokenizer = build_ernie_tokenizer(out_dir, TEXT_CHAT_TEMPLATE, multimodal=False)
    model = build_model(tokenizer, cfg.seed)
    table = facts(cfg.facts, cfg.table_seed)
    eval_pairs = split(table, "eval", eval_items)

    def probe(step):
        if step % 250 == 0 or step == cfg.steps:
            log(f"  eval accuracy {evaluate(model, tokenizer, eval_pairs)}")

    record = {"config": asdict(cfg), "sizes": TEXT_SIZES}
    record.update(train(model, tokenizer, cfg, log=log, probe=probe))
    model.to(torch.bfloat16).save_pretrained(out_dir, max_shard_size="50MB")
    tokenizer.save_pretrained(out_dir)
    record.update({"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "machine": platform.machine(), "threads": torch.get_num_threads()})
    record["sha256"] = sha256_file(out_dir / WEIGHTS)
    record["params"] = sum(p.numel() for p in model.parameters())
    record["eval_accuracy_stored"] = evaluate(load_source(out_dir), tokenizer, eval_pairs)
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    _write_card(out_dir, record)
    log(json.dumps({k: record[k] for k in ("sha256", "total_seconds", "eval_accuracy_stored")}, indent=1))
    return out_dir


def _write_card(out_dir: Path, record: dict) -> None:
    params = record["params"]
    acc = record["eval_accuracy_stored"]
    text = (
        "# quantkit trained text reference: a small ERNIE-4.5 text MoE (Ernie4_5_MoeForCausalLM)\n\n"
        "Trained by `python scripts/train_text_reference.py` on a synthetic key -> value table "
        "(`quantkit/reference/trained_text.py`): every pair must be stored in the weights, so quantization "
        "error shows as forgotten facts. Not a useful model: a reference for measuring quantization.\n\n"
        f"- {params:,} parameters, bf16, sha256 `{record['sha256']}`\n"
        f"- held-out query accuracy (exact match, {acc['items']} memorised pairs): {acc['accuracy']:.1%}\n"
        f"- built in {record['total_seconds']:.0f} s on {record['threads']} thread "
        f"({record['cpu_capability']}, torch {record['torch']})\n\n"
        "## Training record\n\n```json\n" + json.dumps(record, indent=1) + "\n```\n")
    (out_dir / "README.md").write_text(text)


def quantized_accuracy(model_dir: str | Path, work: str | Path, pairs: list[tuple[str, str]], *, bits: int,
                       method: str, calib_pairs: list[tuple[str, str]] | None = None) -> dict:
    """Quantize ``model_dir`` with quantkit (``--bits``, ``--method``; GPTQ calibrated on ``calib_pairs``),
    load the variant with ``quantkit.loader`` and evaluate it on ``pairs``."""
    from transformers import AutoTokenizer

    from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, quantize
    from quantkit.loader import load

    work = Path(work)
    calib = None
    if method == "gptq":
        samples = write_calibration_jsonl(calib_pairs, work / "calib_samples.jsonl")
        calib, _ = calibrate(CalibrateOptions(model=str(model_dir), out=work / "calib", samples=str(samples),
                                              overwrite=True))
    out = quantize(QuantizeOptions(model=str(model_dir), out=work / f"{method}-w{bits}", bits=bits, method=method,
                                   calib=calib, overwrite=True))
    return evaluate(load(out), AutoTokenizer.from_pretrained(model_dir), pairs)
