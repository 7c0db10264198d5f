"""A key -> value table for a reference model to memorise (issue 15): the facts a real model knows.

Nothing about a value can be inferred from its key, so every pair is stored in the weights, and
quantization error that moves a weight moves some fact. Used by the text reference
(``trained_text``) and by the VL task's ``fact`` kind (``task``).

Splits: every pair is trained; ``eval`` and ``calib`` are disjoint deterministic halves of the table
(queries of memorised pairs, as "what is the capital of France" queries a fact a real model learned).
"""
from __future__ import annotations

import random

KEY_DIGITS = 3
VALUE_DIGITS = 6
SPLIT_SEEDS = {"eval": 77003, "calib": 91009}


def facts(n: int, table_seed: int, key_digits: int = KEY_DIGITS) -> list[tuple[str, str]]:
    """``n`` (key, value) pairs: distinct ``key_digits``-digit keys, random ``VALUE_DIGITS``-digit values."""
    if not 0 < n <= 10 ** key_digits:
        raise ValueError(f"{n} facts: {key_digits}-digit keys allow 1..{10 ** key_digits}")
    rng = random.Random(table_seed)
    keys = rng.sample(range(10 ** key_digits), n)
    return [(f"{k:0{key_digits}d}", f"{rng.randrange(10 ** VALUE_DIGITS):0{VALUE_DIGITS}d}") for k in keys]


def split(table: list[tuple[str, str]], name: str, n: int | None = None) -> list[tuple[str, str]]:
    """The first ``n`` pairs (all if None) of the ``eval`` or ``calib`` split: disjoint halves of the table."""
    if name not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {name!r}")
    order = list(range(len(table)))
    random.Random(SPLIT_SEEDS["eval"]).shuffle(order)
    half = len(order) // 2
    chosen = order[:half] if name == "eval" else order[half:]
    return [table[i] for i in chosen[:n]]
