"""A small ERNIE-4.5 text MoE that has memorised a table: the text reference for accuracy measurements
(issue 15), as ``quantkit/reference/trained.py`` is for the VL model.

The real ``Ernie4_5_MoeForCausalLM`` (3 MoE layers of 8 routed experts, top-2, aux-loss-free routing
bias), the offline SentencePiece tokenizer of ``quantkit.reference.tokenizer``; every weight row a
multiple of 256 so llama.cpp's K-quants apply. Unlike the real checkpoints it has no shared expert and
no dense first layer (``moe_num_shared_experts=0``, ``moe_layer_start_index=0``; llama.cpp and the
engines read both as optional): with them (builds of 600-1200 facts, one shared expert, a dense first
layer) the table lived in the tensors every token passes through, which the profiles keep at 4-8 bits,
and 2-bit routed experts cost nothing (RTN 2-bit lost 0-0.3 points of 97-100 %). Without them the
routed experts hold the table, as the experts of a real MoE hold most of its knowledge. Its
task: a synthetic key -> value table (``facts`` distinct ``KEY_DIGITS``-digit keys, random
``VALUE_DIGITS``-digit values, from ``TextTrainConfig.table_seed``), asked as a chat turn
``<|begin_of_sentence|>User: 482\nAssistant: 739105<|end_of_sentence|>`` and scored by exact match of the
whole value (teacher-forced argmax = greedy decoding), so a few wrong digits lose the fact. Nothing about
a value can be inferred from its key: every pair is stored in the weights, as the facts a real model
knows are, and quantization error that moves a weight moves some fact. So the model reacts to low-bit
quantization more as real models do (round-to-nearest 2-bit forgets facts, GPTQ 2-bit far fewer, 4-bit
none) than a model with spare capacity, which shrugs it off (see below for what that took).

Splits: every pair is trained. ``eval`` and ``calib`` are disjoint deterministic subsets of the table
(queries of memorised pairs, as "what is the capital of France" queries a fact a real model learned).
``write_calibration_jsonl`` writes them as samples JSONL (``quantkit calibrate --samples``, and
``quantkit profile --eval``: the last message is the answer scored by exact match); ``reference.json``
in the model directory records the table's parameters, so ``reference_table`` rebuilds it from the
directory alone.

Training: AdamW, cosine schedule, loss on the answer tokens; a curriculum (batches drawn from a pool of
pairs that grows to the whole table) leaves the initial plateau sooner than the whole table at once.
Optionally (``late_share``; off in the shipped build, see below) part of the table is held out of that
schedule and learned in a short last stage of its own (``late_steps`` at ``late_lr``, half of each
batch late pairs), as the VL reference learns its fact table in a last stage.
How the model reacts to quantization depends on how it holds the table. Measured on builds of this
module (300 eval queries; routed experts at 2 bits, group 64, asymmetric; attention at 4 bits):
- With a shared expert and a dense first layer holding the table (600-1200 facts, 97-100 % known),
  RTN 2-bit lost 0-0.3 points. Without them the routed experts hold it.
- Experts initialised as transformers does (std 0.02; trained weights end near 0.08, so they are
  mostly the table): 45 % relative Gaussian noise on every expert weight cost 5 points, RTN 2-bit
  5-9 (builds stopped at 90-93 % recalled), the decision margins being wide against noise spread
  over 256 dimensions.
- Experts initialised at std 0.05-0.08 (~0.8-1.3/sqrt(hidden), the usual fan-in scale), so the table
  is a perturbation of random-looking weights, and trained to the end of the schedule: how much of
  the table the schedule leaves learned decides the rest. Ended at 99 % (std 0.06) / 98 % (0.08, 8000
  steps): RTN 2-bit -11 points; ended at 90 % (0.08): -58, but RTN 4-bit -3.7; ended at 94 % (0.05,
  the build shipped until 2026-12-08, one schedule of 7000 steps over the table): fp 93.7 %, RTN 4-bit
  93.7 %, RTN 2-bit 79.0 % (-14.7), GPTQ 2-bit 91.0 %. A build the schedule ends with part of the
  table learned late, at a small learning rate, holds those facts with small margins, as a real model
  holds its rarer facts; but where the loss leaves its plateau moves that part by thousands of steps
  (below).
- Tried on that build's config (2026-12-08, none shipped): 6300 steps ended
  at 82.7 % (below the 90 % target; at uniform Q3_K's size the allocation's answer KL was 1.22x
  uniform's, as on the shipped build: a less settled table does not change that); a loss on the
  prompt tokens too (weight 1, so the KL at the key positions is of a trained distribution): 40 %
  after 7000 steps; 10 % / 20 % of the answer digits replaced by random digits in each batch (so the
  answers carry entropy, as real models' predictions do): 0 % after 6000 steps, still on the plateau;
  6850 steps left the plateau early and ended at 100 % (RTN 4-bit 100 %, RTN 2-bit 90.3 %: -9.7,
  GPTQ 2-bit 98.7 %). When the loss leaves its plateau decides how settled the table ends, and it
  moves by thousands of steps with small changes to the schedule.
- A late stage (2026-12-08): the main schedule (6000 steps) over three quarters of the table, then the
  held-out quarter. The main schedule ends with its pairs settled (74 % of the eval queries, the
  others not yet seen) whenever it left the plateau, so the late stage alone decides how the last
  pairs are held. Late stage (steps, peak learning rate) -> fp / RTN 4-bit / RTN 2-bit / GPTQ 2-bit:
  1000 at 1e-3 -> 98.3 / 97.3 / 85.0 (-13.3) / 96.7 %; 600 at 1e-3 with 30 % late -> 11 % (a late
  rate near the main peak wiped the table, 39 % after 250 steps in the first build, and 600 steps
  did not relearn it); 600 at 3e-4 -> 97.3 / 96.7 / 67.0 (-30.3) / 94.0 %; 1000 at 3e-4 -> 99.0 /
  99.0 / 77.0 (-22.0) / 97.7 % (16.6 min on one core, the other busy). The last two meet all four of
  issue 15's accuracy targets. Not shipped, measured on the 1000-step build (``late_share=0.25,
  steps=6000, late_steps=1000, late_lr=3e-4``; the bench and profile commands of the README):
  - no allocation at uniform 3-bit experts' size beats uniform 3-bit on the answer KL in either
    runtime (bench/allocation_bound.py: best 1.00x in llama.cpp's units and in vLLM's at group 128).
    Any unit at 2 bits now forgets late pairs (layer 2 at 2 bits: +5.4x uniform's answer KL; the
    best 4-bit unit saves 0.57x), so the budget cannot be freed anywhere;
  - its untrained positions (the ones predicting the random key) dominate every all-position KL:
    Q2_K GPTQ's KL came out above Q2_K RTN's (0.23 vs 0.19) at equal accuracy (98.7 vs 91.3 %);
  - the objective's rank correlation with the measured KL (bench/unit_sensitivity.py) fell from
    0.98 to 0.73 on all positions (0.89 on the answers).
  With three MoE layers, a reference whose every 2-bit unit forgets facts leaves the allocator
  nothing to trade; what both targets need is more units (more layers) with unequal sensitivity.
- Other seeds of the shipped config (``seed``, the model's init and batch order; same table), fp /
  RTN 4-bit / RTN 2-bit / GPTQ 2-bit: seed 1 left the plateau by step 3000 and ended at 97.0 / 97.7 /
  86.3 (-10.7) / 96.3 %; seed 2 left it after step 5000 and ended at 78.7 / 76.7 / 33.0 (-45.7) /
  70.3 %; seed 3 was at 92 % by step 4000 and ended at 99.0 / 98.7 / 98.0 (-1.0) / 98.7 %; seed 4
  never left it (4.7 % after 7000 steps); seed 0 (shipped) 93.7 / 93.7 / 79.0 (-14.7) / 91.0 %. The
  RTN 2-bit loss falls as the table ends more settled, and fp >= 90 % with a loss >= 15 is a narrow
  window the seed alone moves across: the recipe is deterministic but not robust, and the shipped
  weights (checked by their sha256) are one draw of it. Stopping at 90 % of the table recalled
  (``stop_accuracy=0.9``) is robust across seeds but reacts less: seed 1 stopped at step 5250, seed 3
  at 4000, with 93.0 / 92.7 / 85.7 (-7.3) / 91.7 % and 92.0 / 91.0 / 84.0 (-8.0) / 88.0 % (the
  learning rate is still high where they stop, so the last facts are not held with small margins).
- Four MoE layers (2026-12-08, 1000 facts, 6500 steps): still on the plateau at step 2000 and at 50 %
  of the eval queries after 6000 steps (1200 s, the other core busy), so below the 90 % target and
  past the 20-minute build budget; five or six layers cost 1.7-2x a step of three.
Issue 15's targets (fp >= 90 %, RTN 4-bit loses <= 3 points, RTN 2-bit >= 15, GPTQ 2-bit recovers half
of that): the shipped build meets three, and misses the 15 points by one query (44 of 300 lost).
Determinism: one thread, fp32 training, fixed seeds; the shipped weights are bf16 and carry their
sha256 (``TRAINED_TEXT_SHA256``) and the training record in ``trained_text/README.md``. The properties
(fp accuracy, what RTN and GPTQ at 2 and 4 bits cost) are asserted by ``tests/test_reference_text.py``.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import Ernie4_5_MoeForCausalLM

from quantkit.reference.facts import KEY_DIGITS, SPLIT_SEEDS, VALUE_DIGITS, facts, split  # noqa: F401 (re-exported)
from quantkit.reference.tiny import _set_generation_ids, text_moe_config
from quantkit.reference.tokenizer import TEXT_CHAT_TEMPLATE, build_ernie_tokenizer
from quantkit.reference.trained import RouterLoad, curriculum_pool, init_routed_experts

TRAINED_TEXT_DIR = Path(__file__).resolve().parent / "trained_text"
WEIGHTS = "model.safetensors"
TRAINED_TEXT_SHA256 = "8e9efbe6192b253702fe4e428fd139e72f63a7fa4d42aa48fa3d95cf450e9d03"

TEXT_SIZES = {
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "intermediate_size": 256,
    "moe_num_experts": 8,
    "moe_k": 2,
    "moe_intermediate_size": 256,
    "moe_num_shared_experts": 0,
    "moe_layer_start_index": 0,
}
@dataclass(frozen=True)
class TextTrainConfig:
    facts: int = 900
    steps: int = 7000
    batch_size: int = 32
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.02
    warmup: int = 50
    weight_decay: float = 0.0
    bias_update: float = 2e-3
    seed: int = 0
    table_seed: int = 20261207
    key_digits: int = KEY_DIGITS
    # Curriculum: batches come from the first ``curriculum_start`` pairs, a pool that grows linearly to
    # the whole table over ``curriculum_steps``. A small table leaves the loss plateau (learning to look
    # a 3-token key up at all) in a few hundred steps; the whole table from step 0 sat there ~2500.
    curriculum_start: int = 100
    curriculum_steps: int = 1500
    # Stop once this share of the whole table is recalled (checked every ``check_every`` steps).
    # None (the shipped build): the whole schedule, which ends with the table partly learned at a
    # small learning rate (module docstring: how each choice reacts to quantization).
    stop_accuracy: float | None = None
    check_every: int = 250
    # std of the routed experts' initial weights (transformers' default is initializer_range 0.02):
    # at ~0.8/sqrt(hidden) the table is a perturbation of random-looking weights, as knowledge is in
    # real models' experts, instead of the weights being mostly the table (module docstring).
    expert_init_std: float | None = 0.05
    # Late facts (as the VL reference's last stage): ``late_share`` of the table (a seeded subset) is
    # held out of the main schedule and learned in ``late_steps`` more steps of their own warmup and
    # cosine from ``late_lr``, half of each batch late pairs and half the whole table, so they end held
    # with small margins, as a real model holds what it learned last. 0: one schedule over the table.
    # At late_lr 1e-3 (the main schedule peaks at 1.5e-3 and ends at 3e-5) the late stage first wiped
    # most of the table (39 % after 250 steps) and relearned it all. Off in the shipped build: with it,
    # 2-bit anything forgets facts and no allocation can trade (module docstring).
    late_share: float = 0.0
    late_steps: int = 1000
    late_lr: float = 3e-4
    late_warmup: int = 50


# -- the table -------------------------------------------------------------------------------------

TABLE_RECORD = "reference.json"  # in the model directory: the table's parameters


def reference_table(model_dir: str | Path) -> list[tuple[str, str]]:
    """The table a built reference memorised, from its ``reference.json``."""
    rec = json.loads((Path(model_dir) / TABLE_RECORD).read_text())
    if rec.get("value_digits") != VALUE_DIGITS:
        raise ValueError(f"{model_dir}: values of {rec.get('value_digits')} digits; this code builds {VALUE_DIGITS}")
    return facts(int(rec["facts"]), int(rec["table_seed"]), int(rec["key_digits"]))


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

def build_model(tokenizer, seed: int, expert_init_std: float | None = None) -> Ernie4_5_MoeForCausalLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Ernie4_5_MoeForCausalLM(text_moe_config(tokenizer, TEXT_SIZES))
        # transformers leaves the router at zero (every expert ties): start it small and random.
        for m in model.modules():
            if type(m).__name__ == "Ernie4_5_MoeTopKRouter":
                torch.nn.init.normal_(m.weight, std=0.02)
        if expert_init_std is not None:
            init_routed_experts(model, expert_init_std, seed + 1)
    _set_generation_ids(model, tokenizer)
    return model


def late_pairs(n: int, cfg: TextTrainConfig) -> torch.Tensor:
    """Which of the table's ``n`` pairs are learned late (``TextTrainConfig.late_share``), as a mask."""
    mask = torch.zeros(n, dtype=torch.bool)
    k = round(cfg.late_share * n)
    if k:
        mask[torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7))[:k]] = True
    return mask


def train(model, tokenizer, cfg: TextTrainConfig, log: Callable[[str], None] = print,
          probe: Callable[[int], None] | None = None) -> dict:
    """AdamW on the answer tokens (module docstring); ``probe(step)`` every 50 steps (logging only).
    Stops early once ``cfg.stop_accuracy`` of the table is recalled (checked every ``cfg.check_every``)."""
    torch.manual_seed(cfg.seed)
    table = facts(cfg.facts, cfg.table_seed, cfg.key_digits)
    all_ids, start, length = encode(tokenizer, table)
    all_targets = all_ids[:, 1:].clone()
    all_targets[:, : start - 1] = -100  # loss on the answer (value digits and end of sentence) only
    late = late_pairs(len(all_ids), cfg)
    ids, targets = all_ids[~late], all_targets[~late]  # the main schedule's pairs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    load = RouterLoad(model, router_class="Ernie4_5_MoeTopKRouter")
    gen = torch.Generator().manual_seed(cfg.seed)
    order, pos, losses, t0 = torch.randperm(len(ids), generator=gen), 0, [], time.perf_counter()

    def update(batch: torch.Tensor, batch_targets: torch.Tensor, lr: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(input_ids=batch).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch_targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        load.update_bias(cfg.bias_update)
        losses.append(loss.item())

    def lr_at(step: int, steps: int, warmup: int, peak: float) -> float:  # warmup, then cosine to min_lr_ratio
        warm = min(1.0, (step + 1) / warmup)
        cos = 0.5 * (1 + math.cos(math.pi * step / steps))
        return peak * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)

    def logged(label: str, done: int, probe_step: int) -> None:  # every 50 steps
        log(f"{label} {done}: loss {sum(losses[-50:]) / 50:.4f} ({time.perf_counter() - t0:.0f} s)")
        if probe is not None:
            model.eval()
            probe(probe_step)
            model.train()
            load.counts = {}  # evaluation forwards do not count as routed training tokens

    model.train()
    for step in range(cfg.steps):
        pool = curriculum_pool(len(ids), cfg.curriculum_start, cfg.curriculum_steps, step)
        if pool < len(ids):
            idx = torch.randint(0, pool, (cfg.batch_size,), generator=gen)
        else:
            if pos + cfg.batch_size > len(ids):
                order, pos = torch.randperm(len(ids), generator=gen), 0
            idx = order[pos: pos + cfg.batch_size]
            pos += cfg.batch_size
        update(ids[idx], targets[idx], lr_at(step, cfg.steps, cfg.warmup, cfg.lr))
        if (step + 1) % 50 == 0:
            logged("step", step + 1, step + 1)
        if cfg.stop_accuracy is not None and (step + 1) % cfg.check_every == 0:
            model.eval()
            recalled = answer_correct(model, ids, start, length).float().mean().item()
            model.train()
            load.counts = {}
            log(f"step {step + 1}: {recalled:.2%} of the table recalled")
            if recalled >= cfg.stop_accuracy:
                stopped = step + 1
                break
    else:
        stopped = None
    late_idx = torch.nonzero(late).squeeze(1)
    for step in range(cfg.late_steps if len(late_idx) else 0):  # the late pairs (TextTrainConfig.late_share)
        half = cfg.batch_size // 2
        idx = torch.cat([late_idx[torch.randint(0, len(late_idx), (half,), generator=gen)],
                         torch.randint(0, len(all_ids), (cfg.batch_size - half,), generator=gen)])
        update(all_ids[idx], all_targets[idx], lr_at(step, cfg.late_steps, cfg.late_warmup, cfg.late_lr))
        if (step + 1) % 50 == 0:
            logged("late step", step + 1, cfg.steps + step + 1)
    load.close()
    model.eval()
    return {"train_seconds": round(time.perf_counter() - t0, 1), "stopped_at_step": stopped,
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
    model = build_model(tokenizer, cfg.seed, cfg.expert_init_std)
    table = facts(cfg.facts, cfg.table_seed, cfg.key_digits)
    eval_pairs = split(table, "eval", eval_items)

    def probe(step):
        if step % 250 == 0 or step in (cfg.steps, cfg.steps + cfg.late_steps):
            log(f"  eval accuracy {evaluate(model, tokenizer, eval_pairs)}")

    record = {"config": asdict(cfg), "sizes": TEXT_SIZES}
    record.update(train(model, tokenizer, cfg, log=log, probe=probe))
    model.to(torch.bfloat16).save_pretrained(out_dir, max_shard_size="50MB")
    tokenizer.save_pretrained(out_dir)
    (out_dir / TABLE_RECORD).write_text(json.dumps({"facts": cfg.facts, "table_seed": cfg.table_seed,
                                                    "key_digits": cfg.key_digits, "value_digits": VALUE_DIGITS}) + "\n")
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
        f"- eval-split query accuracy (exact match of the value, {acc['items']} memorised pairs): {acc['accuracy']:.1%}\n"
        f"- built in {record['total_seconds']:.0f} s on {record['threads']} thread "
        f"({record['cpu_capability']}, torch {record['torch']})\n\n"
        "## Training record\n\n```json\n" + json.dumps(record, indent=1) + "\n```\n")
    (out_dir / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    """``python -m quantkit.reference.trained_text {eval,calib} N OUT.jsonl [--model DIR]``: write ``N``
    pairs of a split of the reference's table as samples JSONL (for ``quantkit profile --eval`` /
    ``quantkit calibrate --samples``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m quantkit.reference.trained_text", description=main.__doc__)
    parser.add_argument("split", choices=tuple(SPLIT_SEEDS))
    parser.add_argument("n", type=int, help="pairs to write")
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, default=TRAINED_TEXT_DIR, help="the reference (its reference.json)")
    args = parser.parse_args(argv)
    pairs = split(reference_table(args.model), args.split, args.n)
    path = write_calibration_jsonl(pairs, args.out)
    print(f"{len(pairs)} {args.split} pairs written: {path}")


if __name__ == "__main__":
    main()
