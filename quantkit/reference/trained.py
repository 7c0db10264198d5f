"""A small ERNIE-4.5-VL that has learned something: the reference model for accuracy measurements.

Random-weight tiny models barely react to their experts, so quantization error measured on them says
little. This module builds the real ``Ernie4_5_VLMoeForConditionalGeneration`` (dense first layer,
MoE layers with text and vision experts, the ViT and resampler, the real tokenizer layout and
``Ernie4_5_VLMoeProcessor``) and trains it on ``quantkit.reference.task``: questions about generated
pictures (colour, shape, count, position, reading a number, reading a bar chart), text-only questions,
and a memorised table of facts (key -> 6-digit value), answered in a few tokens.

Sizes (``TRAINED_SIZES``): hidden 128, 4 heads x 32, 2 KV heads, 4 layers (dense, then 3 MoE layers),
8 text + 8 vision experts per MoE layer, top-4, expert widths [128, 64], no shared expert, dense
first-layer MLP of width 64; ViT depth 2, width 64, patch 14, merge 2 (its 112 px pictures give 16
image tokens). bf16, as the real checkpoints store them. Every expert input width is a multiple of 64
and the hidden size is 128, so the shipped profiles' group sizes (128 / 64) apply to the experts as on
the real model (the width-64 vision experts' down_proj and the dense MLP's fall back to group 64 in
the w4/w8 profiles, as recorded in quantkit.json).

Why top-4 and a narrow dense layer: with top-2 and a 256-wide dense layer the model reached the same
accuracy but leaned on the dense first layer, shared experts and attention: zeroing every routed
expert cost only 11 points (91 % -> 79 %). With the routed experts carrying most of each MoE layer's
active width and the first layer narrow, the experts matter, as in the real model.

Why facts, and why no shared expert (issue 15: a reference must react to low bits as real models do).
The picture and text kinds have few possible answers and wide margins: the previous build (one shared
expert, no facts) lost 0.3-0.5 points under round-to-nearest 2-bit experts, and a probe retrained
without shared expert and with experts started at std 0.1 still lost only 1.4. Real models lose
knowledge first, so the ``fact`` kind (``task``) makes the model store a table it cannot infer, half of
every eval set. With one shared expert the table was not learned at all (0 % of the held-out facts
after 3000 steps, against 34 % without): the shared expert, which the profiles keep at 4-8 bits
anyway, is left out, as the text reference leaves it out. The routed experts start at std 0.07
(~0.8/sqrt(hidden)) instead of transformers' 0.02, so the table is a perturbation of random-looking
weights (``trained_text``'s docstring has what that does).

Training (``train``), three stages:
1. ``pretrain_vision``: the vision tower and resampler alone, classifying the pictures (a linear head
   per kind over the image tokens, dropped afterwards): the pre-trained vision encoder that real VLMs
   start from. Trained jointly with the language model from scratch instead, the resampler collapses
   within a hundred steps to one output for every picture (image content is noise to a language model
   that does not read it yet, and a constant is the cheapest way to silence noise).
2. The language model (embeddings, attention, dense layer, experts, routers) with the vision side
   frozen, on every kind but facts: AdamW, cosine schedule, batches mixing the kinds (``KIND_WEIGHTS``
   favour the kinds learned slowest); loss = cross-entropy on the answer tokens (answer +
   ``<|end_of_sentence|>``) plus a smaller weight on the other text tokens, so the model also predicts
   the questions' text and perplexity on held-out text means something (image placeholders are neither
   predicted nor predicted from). The routers train through their routing weights; the routing bias
   ``e_score_correction_bias`` is updated without gradients, aux-loss-free as in ERNIE-4.5 /
   DeepSeek-V3 (raised for under-loaded experts, lowered for over-loaded ones), so every expert gets
   tokens. Half of the sequences use the chat template's rendering of a full conversation
   (``Assistant: red<|end_of_sentence|>``), half the generation prompt with thinking off followed by
   the answer: calibration sets in either form are in distribution.
3. The fact table (``fact_steps``, its own warmup and cosine schedule, a growing pool of pairs as in
   ``trained_text``), with a stage-2 batch replayed every ``replay_every`` steps. Interleaving the table
   from the start instead (one fact batch a step, a task batch every 5th, 6000 steps) left the other
   kinds at 23-100 %: they got a fifth of the updates. How long stage 3 runs decides how the table is
   held: trained long (4000-4800 steps) every eval fact is recalled with wide margins and
   round-to-nearest 2-bit loses 4-6 points overall; the shipped length ends with the last pairs learned
   at a small learning rate, held with small margins, as a real model holds its rarer facts.
   Measured builds (eval 40 per kind = 720 items, 360 of them facts; routed experts 2-bit g64
   asymmetric, attention 4-bit; calibration 32 per kind):

   | stage 3 (fact steps; pool grows over; replay every) | fp | RTN w4 | RTN w2 | GPTQ w2 |
   |---|---|---|---|---|
   | 4000; 1500; 5 (vision tower copied from the old build) | 94.6 | 94.3 | 88.3 | 90.7 |
   | 4800; 1500; 10 (same) | 90.7 | 90.1 | 86.5 | 89.7 |
   | 2600; 1500; 5 | 92.5 | 92.8 | 83.8 | 89.0 |
   | 2000; 1500; 5 | 90.0 | 88.9 | 76.1 | 81.5 |
   | 1600; 1000; 5 | 89.6 | 89.7 | 69.6 | 80.3 |
   | 1600; 1500; 3 (facts 95 %: RTN w2 keeps 40 % of them) | 91.3 | 90.3 | 61.1 | 74.6 |
   | 1600; 1200; 3 | 92.4 | 92.6 | 68.1 | 83.2 |
   | **1600; 1000; 3 (shipped)** | **93.9** | **94.2** | **69.3** | **84.0** |

   Replaying every 3rd step instead of every 5th keeps the other kinds (ocr, count, compare lose most
   to the table's digits). The shipped build meets issue 15's four targets: fp >= 90 %, RTN w4 loses
   <= 3 points (it gains 0.3), RTN w2 loses >= 15 (24.6: facts 100 % -> 54 %), GPTQ w2 recovers at least
   half of that (14.7 of 24.6). Items of 40 per kind are coarse: one item of a kind is 2.5 points of it.
Determinism: one thread, fp32, fixed seeds, data from ``task.make_item``; two builds on the same
machine and library versions give byte-identical weights (checked on the full build, and by
``tests/test_reference_trained.py`` on a few steps). Float summation order differs between CPU
kernels (AVX2 / AVX-512) and torch versions, so another machine may produce other bytes with the same
accuracy; the shipped files (``quantkit/reference/trained/``) carry their sha256 in ``TRAINED_SHA256``
and the training record (timings, losses, accuracies, machine) in their ``README.md``.
"""
from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

from quantkit.loader import load_source
from quantkit.manifest import sha256_file
from quantkit.reference import task
from quantkit.reference.tiny import _set_generation_ids, _tiny_vl_processor, vl_config
from quantkit.reference.tokenizer import build_ernie_tokenizer, vl_chat_template

# The committed build (weights, config, tokenizer, processor, model card with the training record).
TRAINED_DIR = Path(__file__).resolve().parent / "trained"
WEIGHTS = "model.safetensors"
# sha256 of TRAINED_DIR/model.safetensors as produced by `python scripts/train_reference.py`.
TRAINED_SHA256 = "8928940349f0e8e320606d182d4cf7cf26fc6d9929c4032f91d41b38747468d8"

TRAINED_SIZES = {
    "hidden_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 4,
    "intermediate_size": 64,
    "moe_num_experts": 8,
    "moe_k": 4,
    "moe_intermediate_size": [128, 64],
    "moe_num_shared_experts": 0,
    "mrope_section": [6, 6, 4],
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "vision_num_heads": 2,
    "vision_intermediate_size": 256,
}


# Training items per kind, relative to TrainConfig.train_items_per_kind: the kinds the model learns
# slowest (reading shapes, counts and digits off the picture, comparing numbers) get more of the batch.
# The ``fact`` kind is not in these batches: the table has its own batch in every step (``train``).
KIND_WEIGHTS = {"colour": 0.5, "shape": 1.6, "count": 1.3, "position": 0.6, "ocr": 1.6, "chart": 0.7,
                "compare": 1.4, "pick": 0.8, "last": 0.5, "fact": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1200  # stage 2: batches of every kind but facts
    batch_size: int = 32
    # Stage 3: the fact table (``fact_batch`` pairs a step, its own warmup + cosine schedule from
    # ``fact_lr``), with a batch of the other kinds replayed every ``replay_every`` steps so that
    # stage 2's skills stay.
    fact_steps: int = 1600
    fact_batch: int = 32
    fact_lr: float = 3e-3
    replay_every: int = 3
    # Facts curriculum (as trained_text's): the fact batches come from the first ``fact_curriculum_start``
    # pairs of the table, a pool that grows linearly to the whole table over ``fact_curriculum_steps``.
    fact_curriculum_start: int = 100
    fact_curriculum_steps: int = 1000
    # std of the routed experts' initial weights (~0.8/sqrt(hidden)): the table becomes a perturbation of
    # random-looking weights, as knowledge is in real models' experts (trained_text's docstring).
    expert_init_std: float | None = 0.07
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 40
    weight_decay: float = 0.01
    other_text_weight: float = 0.2  # loss weight of non-answer text tokens, relative to answer tokens
    bias_update: float = 2e-3  # aux-loss-free routing bias step
    # Stage 1 trains the vision tower and resampler alone (pretrain_vision); stage 2 trains the
    # language model with them frozen. Trained jointly from scratch, the resampler collapses to one
    # output for every image within a hundred steps (image content is noise to a language model that
    # does not read it yet, and a constant is the cheapest way to remove noise).
    vision_pretrain_steps: int = 1500
    vision_pretrain_batch: int = 48
    vision_lr: float = 2e-3
    train_items_per_kind: int = 1200
    eval_items_per_kind: int = 40
    seed: int = 0


def trained_config(tokenizer) -> Ernie4_5_VLMoeConfig:
    return vl_config(tokenizer, TRAINED_SIZES)


# -- data ------------------------------------------------------------------------------------------

def _encode_full_conversation(processor, item: task.Item) -> dict:
    """The chat template's rendering of [user, assistant]; ``answer_start`` at the answer's first token."""
    messages = [{"role": "user", "content": item.user_content()},
                {"role": "assistant", "content": [{"type": "text", "text": item.answer}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    images = [item.image] if item.image is not None else None
    batch = dict(processor(text=[text], images=images, return_tensors="pt"))
    head = text[: text.rindex("\nAssistant: ") + len("\nAssistant:")]
    start = processor(text=[head], images=images, return_tensors="pt")["input_ids"].shape[1]
    batch["answer_start"] = start
    return batch


def encode_training_set(processor, items: list[task.Item], seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for item in items:
        enc = task.encode(processor, item) if rng.random() < 0.5 else _encode_full_conversation(processor, item)
        out.append(enc)
    return out


def loss_weights(batch: dict, other_text_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (next token, -100 where none) and per-target weights: answer tokens 1, other text
    tokens ``other_text_weight``, image tokens and padding 0. Shapes [B, T-1]."""
    ids = batch["input_ids"]
    targets = ids[:, 1:].clone()
    weights = torch.zeros(targets.shape, dtype=torch.float32)
    for b, (start, length) in enumerate(zip(batch["answer_start"], batch["lengths"])):
        weights[b, : length - 1] = other_text_weight
        weights[b, start - 1: length - 1] = 1.0
    mm = batch.get("mm_token_type_ids")
    if mm is not None:
        # Image placeholders are not predicted, and nothing is predicted from them: a loss on
        # "<|IMAGE_END|> follows the last image token" is cheapest to meet by making every image look
        # alike, and the jointly trained vision tower collapses to that within a hundred steps.
        weights[(mm[:, 1:] != 0) | (mm[:, :-1] != 0)] = 0.0
    targets[weights == 0] = -100
    return targets, weights


# -- training --------------------------------------------------------------------------------------

class RouterLoad:
    """Counts the tokens each router sends to each expert during one forward, for the aux-loss-free
    routing bias update (ERNIE-4.5 / DeepSeek-V3: the bias rises for under-loaded experts).
    `router_class` names the family's router module (the VL model's by default)."""

    def __init__(self, model, router_class: str = "Ernie4_5_VLMoeMoeTopKRouter"):
        self.counts: dict[torch.nn.Module, torch.Tensor] = {}
        self.handles = []
        for module in model.modules():
            if type(module).__name__ == router_class:
                self.handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module, args, output):
        selected = output[2]
        if selected.numel():
            counts = torch.bincount(selected.reshape(-1), minlength=module.num_experts).float()
            self.counts[module] = self.counts.get(module, 0) + counts

    def update_bias(self, step: float) -> None:
        with torch.no_grad():
            for module, counts in self.counts.items():
                load = counts / counts.sum()
                bias = module.moe_statics.e_score_correction_bias
                bias += step * torch.sign(load.mean() - load)[None, :]
                bias -= bias.mean()
        self.counts = {}

    def close(self):
        for h in self.handles:
            h.remove()


def build_model(tokenizer, seed: int, expert_init_std: float | None = None) -> Ernie4_5_VLMoeForConditionalGeneration:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Ernie4_5_VLMoeForConditionalGeneration(trained_config(tokenizer))
        if expert_init_std is not None:
            init_routed_experts(model, expert_init_std, seed + 1)
    _set_generation_ids(model, tokenizer)
    return model.float()


def init_routed_experts(model, std: float, seed: int) -> None:
    """Redraw the routed experts' stacked weights (gate_up_proj / down_proj) from N(0, std²) under
    ``seed``: at ~0.8/sqrt(hidden) a memorised table is a perturbation of random-looking weights
    (``trained_text``'s docstring). The caller forks the RNG."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if ".experts." in name and p.dim() == 3:
            torch.nn.init.normal_(p, std=std)


def curriculum_pool(n: int, start: int, steps: int, step: int) -> int:
    """How many of the first pairs of a table a curriculum draws from at ``step``: ``start`` growing
    linearly to all ``n`` over ``steps``."""
    return min(n, start + (n - start) * step // max(1, steps))


def train(model, processor, cfg: TrainConfig, log: Callable[[str], None] = print,
          eval_items: list[task.Item] | None = None) -> dict:
    """Train in place; returns the training record (losses, time, eval accuracy if given)."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    items = [task.make_item("train", kind, i) for kind in task.KINDS
             for i in range(round(cfg.train_items_per_kind * KIND_WEIGHTS.get(kind, 1.0)))]
    data = encode_training_set(processor, items, cfg.seed)
    fact_forms = encode_facts(processor)
    t_data = time.perf_counter() - t0
    pre = {}
    if cfg.vision_pretrain_steps:
        images = [(d, it) for d, it in zip(data, items) if it.kind in task.IMAGE_ANSWERS]
        held = [it for it in (eval_items or []) if it.kind in task.IMAGE_ANSWERS]
        pre = pretrain_vision(model, [d for d, _ in images], [it for _, it in images], cfg, log,
                              held_out=([task.encode(processor, it, with_answer=False) for it in held], held)
                              if held else None)
    vision_params = [p for n, p in model.named_parameters() if _is_vision(n)]
    for p in vision_params:
        p.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "embed" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    loads = RouterLoad(model)
    order_rng = random.Random(cfg.seed + 1)
    fact_gen = torch.Generator().manual_seed(cfg.seed + 4)
    order: list[int] = []
    history = []
    model.train()
    t1 = time.perf_counter()
    try:
        for step in range(cfg.steps + cfg.fact_steps):
            in_facts = step >= cfg.steps
            if in_facts:
                s3 = step - cfg.steps
                lr = cfg.fact_lr * _schedule(s3, replace(cfg, steps=cfg.fact_steps))
            else:
                lr = cfg.lr * _schedule(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = torch.zeros(())
            if in_facts:
                rows = _fact_rows(s3, cfg, len(task.fact_table()), fact_gen)
                loss = loss + fact_loss(model, fact_forms[s3 % 2], rows)
            answer_loss = None
            if not in_facts or s3 % cfg.replay_every == 0:
                if len(order) < cfg.batch_size:
                    fresh = list(range(len(data)))
                    order_rng.shuffle(fresh)
                    order += fresh
                idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
                batch = task.collate([data[i] for i in idx], pad_token_id=processor.tokenizer.pad_token_id)
                targets, weights = loss_weights(batch, cfg.other_text_weight)
                logits = model(**task.model_inputs(batch), use_cache=False).logits[:, :-1].float()
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
                                      ignore_index=-100).reshape(targets.shape)
                loss = loss + (nll * weights).sum() / weights.sum()
                answer_loss = float(nll.detach()[weights == 1.0].mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loads.update_bias(cfg.bias_update)
            history.append((step, float(loss.detach()), answer_loss))
            if step % 250 == 0 or step in (cfg.steps - 1, cfg.steps + cfg.fact_steps - 1):
                msg = (f"step {step:4d}  lr {lr:.2e}  loss {float(loss.detach()):.4f}  "
                       f"{time.perf_counter() - t1:.0f}s")
                probe = [it for it in (eval_items or []) if it.kind == "fact" and step % 1000 == 0
                         or it.kind != "fact" and step == cfg.steps - 1]
                if probe:  # logging only: held-out accuracy of the facts, and of the rest after stage 2
                    model.eval()
                    msg += f"  eval {evaluate(model, processor, probe)['by_kind']}"
                    model.train()
                    loads.counts = {}  # evaluation forwards are not routed training tokens
                log(msg)
    finally:
        loads.close()
        for p in vision_params:
            p.requires_grad_(True)
        model.eval()
    task_losses = [h for h in history if h[2] is not None]
    record = {"config": asdict(cfg), "sizes": TRAINED_SIZES, "data_seconds": round(t_data, 1), "vision_pretrain": pre,
              "train_seconds": round(time.perf_counter() - t1, 1), "final_loss": history[-1][1],
              "final_answer_loss": task_losses[-1][2],
              "loss_every_250": [round(h[1], 4) for h in history[::250]],
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "machine": platform.machine(), "threads": torch.get_num_threads()}
    if eval_items is not None:
        record["eval_accuracy"] = evaluate(model, processor, eval_items)
    return record


def encode_facts(processor) -> tuple[dict, dict]:
    """Every pair of the task's fact table as two collated batches: the generation prompt with thinking
    off (as evaluated) and the chat template's full conversation (both forms are in calibration sets)."""
    pad = processor.tokenizer.pad_token_id
    items = [task.Item(f"fact-{i}", "fact", k, v) for i, (k, v) in enumerate(task.fact_table())]
    return (task.collate([task.encode(processor, it) for it in items], pad_token_id=pad),
            task.collate([_encode_full_conversation(processor, it) for it in items], pad_token_id=pad))


def _fact_rows(step: int, cfg: TrainConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """The table rows of one step's fact batch: drawn from a pool that grows to the whole table."""
    pool = curriculum_pool(n, cfg.fact_curriculum_start, cfg.fact_curriculum_steps, step)
    return torch.randint(0, pool, (cfg.fact_batch,), generator=gen)


def fact_loss(model, facts: dict, rows: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the answer tokens (value digits and end of sentence) of the chosen facts; every
    pair of one form has the same length and answer position."""
    ids = facts["input_ids"][rows]
    inputs = {k: v[rows] for k, v in facts.items() if k in task.SEQUENCE_KEYS}
    start = facts["answer_start"][0]
    logits = model(**inputs, use_cache=False).logits[:, start - 1: -1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, start:].reshape(-1))


def pretrain_vision(model, encoded: list[dict], items: list[task.Item], cfg: TrainConfig, log,
                    held_out: tuple[list[dict], list[task.Item]] | None = None) -> dict:
    """Stage 1: train the vision tower and resampler to classify the pictures (one linear head over
    the image's tokens, per kind, dropped afterwards): a pre-trained vision encoder, as real VLMs
    start from. Returns the stage's record."""
    offsets, classes = {}, 0
    for kind, answers in task.IMAGE_ANSWERS.items():
        offsets[kind] = (classes, classes + len(answers))
        classes += len(answers)
    targets = torch.tensor([offsets[it.kind][0] + task.IMAGE_ANSWERS[it.kind].index(it.answer) for it in items])
    tokens = int(encoded[0]["image_grid_thw"].prod()) // 4  # 2 x 2 merge
    hidden = model.config.text_config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 2)
        head = torch.nn.Linear((tokens + 2) * hidden, classes)
    mask = torch.full((len(task.IMAGE_ANSWERS), classes), float("-inf"))
    kind_index = {k: i for i, k in enumerate(task.IMAGE_ANSWERS)}
    for k, (a, b) in offsets.items():
        mask[kind_index[k], a:b] = 0.0
    kinds = torch.tensor([kind_index[it.kind] for it in items])
    params = [p for n, p in model.named_parameters() if _is_vision(n)] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed + 3)
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.vision_pretrain_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.vision_lr * _schedule(step, replace(cfg, steps=cfg.vision_pretrain_steps))
        idx = rng.sample(range(len(items)), cfg.vision_pretrain_batch)
        pixels = torch.cat([encoded[i]["pixel_values"] for i in idx])
        grid = torch.cat([encoded[i]["image_grid_thw"] for i in idx])
        feats = _pooled(_image_features(model, pixels, grid).reshape(len(idx), tokens, hidden))
        logits = head(feats) + mask[kinds[idx]]
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.vision_pretrain_steps - 1:
            acc = float((logits.argmax(-1) == targets[idx]).float().mean())
            log(f"vision step {step:4d}  loss {float(loss.detach()):.4f}  batch accuracy {acc:.2f}  "
                f"{time.perf_counter() - t0:.0f}s")
    record = {"steps": cfg.vision_pretrain_steps, "final_loss": round(float(loss.detach()), 4),
              "seconds": round(time.perf_counter() - t0, 1)}
    if held_out:
        h_enc, h_items = held_out
        h_targets = torch.tensor([offsets[it.kind][0] + task.IMAGE_ANSWERS[it.kind].index(it.answer) for it in h_items])
        h_kinds = torch.tensor([kind_index[it.kind] for it in h_items])
        with torch.no_grad():
            feats = _image_features(model, torch.cat([e["pixel_values"] for e in h_enc]),
                                    torch.cat([e["image_grid_thw"] for e in h_enc]))
            feats = _pooled(feats.reshape(len(h_items), tokens, hidden))
            ok = (head(feats) + mask[h_kinds]).argmax(-1) == h_targets
        record["held_out_accuracy"] = {k: round(float(ok[h_kinds == i].float().mean()), 3)
                                       for k, i in kind_index.items() if (h_kinds == i).any()}
        log(f"vision held-out accuracy {record['held_out_accuracy']}")
    return record


def _pooled(feats: torch.Tensor) -> torch.Tensor:
    """[N, tokens, H] -> every token (where things are) + max and mean over tokens (what is there)."""
    return torch.cat([feats.flatten(1), feats.amax(1), feats.mean(1)], 1)


def _image_features(model, pixel_values, grid):
    out = model.model.get_image_features(pixel_values, grid)
    out = getattr(out, "pooler_output", out)
    return torch.cat(list(out)) if isinstance(out, (list, tuple)) else out


def _is_vision(name: str) -> bool:
    return "vision_tower" in name or "resampler" in name or "vision_model" in name


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def answer_correct(model, processor, items: list[task.Item], batch_size: int = 48) -> list[bool]:
    """Exact match per item under greedy decoding, computed teacher-forced (see ``task``)."""
    model.eval()
    out = []
    for i in range(0, len(items), batch_size):
        enc = [task.encode(processor, it) for it in items[i:i + batch_size]]
        batch = task.collate(enc, pad_token_id=processor.tokenizer.pad_token_id)
        pred = model(**task.model_inputs(batch), use_cache=False).logits.argmax(-1)
        ids = batch["input_ids"]
        for b, (start, length) in enumerate(zip(batch["answer_start"], batch["lengths"])):
            out.append(bool((pred[b, start - 1: length - 1] == ids[b, start:length]).all()))
    return out


def evaluate(model, processor, items: list[task.Item]) -> dict:
    correct = answer_correct(model, processor, items)
    by_kind: dict[str, list[bool]] = {}
    for item, ok in zip(items, correct):
        by_kind.setdefault(item.kind, []).append(ok)
    return {"accuracy": sum(correct) / len(correct), "items": len(correct),
            "by_kind": {k: round(sum(v) / len(v), 4) for k, v in by_kind.items()}}


def zero_routed_experts(model) -> None:
    """Zero every routed expert (text and vision) in place: the shared expert and the rest stay."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".experts." in name or name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                p.zero_()


# -- build -----------------------------------------------------------------------------------------

def build_trained_reference(out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
                            log: Callable[[str], None] = print) -> Path:
    """Train the reference model and save it (bf16 safetensors, config, tokenizer, processor, card)."""
    out_dir = Path(out_dir)
    torch.set_num_threads(1)
    started = time.perf_counter()
    template = vl_chat_template(thinking_by_default=False)
    tokenizer = build_ernie_tokenizer(out_dir, template, multimodal=True)
    processor = _tiny_vl_processor(tokenizer)
    model = build_model(tokenizer, cfg.seed, cfg.expert_init_std)
    eval_items = task.generate("eval", cfg.eval_items_per_kind)
    record = train(model, processor, cfg, log=log, eval_items=eval_items)
    model.to(torch.bfloat16).save_pretrained(out_dir, max_shard_size="50MB")
    processor.save_pretrained(out_dir)
    record["sha256"] = sha256_file(out_dir / WEIGHTS)
    record["params"] = sum(p.numel() for p in model.parameters())
    # The stored (bf16) weights are the reference: report their accuracy, and with experts zeroed.
    stored = load_source(out_dir)
    record["eval_accuracy_stored"] = evaluate(stored, processor, eval_items)
    zero_routed_experts(stored)
    record["eval_accuracy_zeroed_experts"] = evaluate(stored, processor, eval_items)
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    _write_card(out_dir, record)
    log(json.dumps({k: record[k] for k in ("sha256", "total_seconds", "eval_accuracy_stored",
                                           "eval_accuracy_zeroed_experts")}, indent=1))
    return out_dir


def _write_card(out_dir: Path, record: dict) -> None:
    fp, zeroed = record["eval_accuracy_stored"], record["eval_accuracy_zeroed_experts"]
    size = (out_dir / WEIGHTS).stat().st_size
    text = (
        "# quantkit trained reference: a small ERNIE-4.5-VL (Ernie4_5_VLMoeForConditionalGeneration)\n\n"
        "Trained by `python scripts/train_reference.py` on the synthetic task of "
        "`quantkit/reference/task.py` (see `quantkit/reference/trained.py`). Not a useful model: a "
        "reference for measuring what quantization does to a model whose experts matter.\n\n"
        f"- {record['params']:,} parameters, bf16, `{WEIGHTS}` {size:,} bytes, "
        f"sha256 `{record['sha256']}`\n"
        f"- held-out task accuracy (exact match, {fp['items']} items): {100 * fp['accuracy']:.1f}%; with every "
        f"routed expert zeroed: {100 * zeroed['accuracy']:.1f}%\n"
        f"- built in {record['total_seconds']:.0f} s on one thread ({record['cpu_capability']}, torch "
        f"{record['torch']}): vision stage {record['vision_pretrain'].get('seconds', 0):.0f} s, language "
        f"stage {record['train_seconds']:.0f} s\n\n"
        "## Training record\n\n```json\n" + json.dumps(record, indent=1) + "\n```\n"
    )
    (out_dir / "README.md").write_text(text)
