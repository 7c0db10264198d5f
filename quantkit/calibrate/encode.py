"""Calibration samples -> model inputs, with the model's own processor and chat template."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..adapters.base import Adapter
from ..checkpoint import Checkpoint
from ..errors import CalibrationError
from ..progress import report
from .processor import load_processor, use_chat_template
from .samples import SampleSet, default_set_dir, encode_sample, load_samples, vision_mask


@dataclass
class EncodedSamples:
    inputs: list[dict[str, torch.Tensor]]
    summary: dict = field(default_factory=dict)


def _is_vl(adapter: Adapter) -> bool:
    return adapter.takes_pictures


def encode_samples(ckpt: Checkpoint, adapter: Adapter, samples: str | Path | None, *,
                   max_tokens: int | None = 4096, chat_template: str | Path | None = None,
                   log: Callable[[str], None] = lambda m: None) -> EncodedSamples:
    path = Path(samples) if samples is not None else default_set_dir()
    sample_set: SampleSet = load_samples(path, max_tokens=max_tokens)
    processor = load_processor(ckpt.path, vision=_is_vl(adapter))
    template = use_chat_template(processor, chat_template)
    if _is_vl(adapter):
        usable = sample_set.samples
    else:  # a text-only model: its tokenizer, and the samples without pictures
        usable = [s for s in sample_set.samples if not s.has_media]
        if not usable:
            raise CalibrationError(f"--samples {path}: no text-only sample for the text model {ckpt.source}")
    inputs = []
    for s in usable:
        inputs.append(encode_sample(processor, s, max_tokens=max_tokens))
        report(log, "encode samples", len(inputs), len(usable), "sample")
    text = vision = 0
    for x in inputs:
        marks = vision_mask(x)
        n = x["input_ids"].numel()
        v = int(marks.sum()) if marks is not None else 0
        vision += v
        text += n - v
    summary = {"path": str(path), "sha256": sample_set.sha256, "samples": len(inputs),
               "skipped_with_media": len(sample_set.samples) - len(usable),
               "tokens": {"text": text, "vision": vision}, "stats": sample_set.stats(), "chat_template": template}
    return EncodedSamples(inputs, summary)
