"""Model inputs built with the model's own processor and chat template (image + text)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..calibrate.processor import load_processor


def synthetic_image(seed: int = 0, size: tuple[int, int] = (112, 84)) -> Image.Image:
    """A small picture with coloured shapes: real pixels for the vision tower to see."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] - 20)), int(rng.integers(0, size[1] - 20))
        w, h = int(rng.integers(10, 40)), int(rng.integers(10, 40))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def vl_inputs(model_dir: str | Path, *, seed: int = 0, question: str = "What shapes and colours are in the picture?",
              image: Image.Image | None = None) -> dict[str, torch.Tensor]:
    """One user turn (image + question) through the chat template and the processor."""

    processor = load_processor(str(model_dir), vision=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = processor(text=[text], images=[image or synthetic_image(seed)], return_tensors="pt")
    return dict(batch)
