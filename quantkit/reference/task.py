"""A synthetic multimodal task for the trained reference model: questions answered in a few tokens.

Items are generated deterministically: item ``i`` of kind ``k`` in split ``s`` comes from its own
random stream ``numpy.random.default_rng([SPLIT_SEEDS[s], KIND_INDEX[k], i])``, so a split does not
depend on how many items are asked for, and the same call gives the same pictures and questions on
any machine (pictures are drawn with Pillow's built-in font; Pillow 10.1+ with FreeType is needed
for text).

Kinds (``IMAGE_KINDS`` use one 112 x 112 picture, 16 image tokens after the 2 x 2 merge):

    colour    one shape               "What colour is the shape?"               -> red / green / ... (6)
    shape     one large shape         "What shape is this?"                     -> circle / square / triangle
    count     1-3 shapes              "How many shapes are there?"              -> 1 / 2 / 3
    position  one shape, one half     "Is the shape on the left or the right?"  -> left / right
                                      "Is the shape at the top or the bottom?"  -> top / bottom
    ocr       a rendered digit        "What number is written?"                 -> 0 .. 9
    chart     a 3-bar chart           "Which bar is the tallest?"               -> the bar's colour
    compare   text only               "Which is larger, 3 or 8?"                -> 8
    pick      text only               "Which word is a colour: dog, red, tree?" -> red (colours, animals)
    last      text only               "What is the last word: cat sun tree?"    -> tree
    fact      text only, memorised    "482"                                     -> 739105 (a table's value)

The sizes are chosen for what a 2-block ViT of width 64 learns in a couple of minutes on one CPU
thread (shapes of 56-86 px, digits of 56-72 px near the centre; smaller ones it reads poorly).

A share of the colour and shape questions is asked in Chinese (``lang: zh``); answers are English.

Held out: the evaluation and calibration splits use other seeds than training, so every picture is
new (fresh sizes, positions, colour jitter, backgrounds, fonts). The text-only questions are also
disjoint as strings: each possible question belongs to one split by a hash of its text
(``text_split``), and training never sees an evaluation question. OCR numbers, colours and shapes
themselves are shared by the splits (the task is to read them, not to have seen them); ``compare``
has 90 possible questions, 73 of them (by the hash) for training, so its evaluation items repeat 17.

Facts are the exception, by design: the ``fact`` kind queries a memorised table
(``quantkit.reference.facts``, ``FACT_COUNT`` pairs): training covers every pair, eval and calib query
disjoint halves of it, as a knowledge benchmark queries what a model learned. ``generate`` gives
``KIND_ITEMS["fact"]`` (9) fact items per index, so facts are half of an eval set: nothing about a
value can be inferred, the pairs live in the routed text experts' weights, and they are what low-bit
quantization loses first, as real models lose knowledge before skills.

Scoring is exact match after normalisation (``normalize``: strip, lower case, no trailing period).

Files (``write_jsonl``): the calibration/samples JSONL format, one item per line::

    {"id": "eval-colour-0003", "kind": "colour", "lang": "en", "thinking": false,
     "messages": [{"role": "user", "content": [{"type": "image", "image": "images/eval-colour-0003.png"},
                                               {"type": "text", "text": "What colour is the shape?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]}

with the PNGs under ``images/`` next to the JSONL (paths relative to the JSONL file). The last
assistant message is the reference answer; ``read_jsonl`` turns such a file back into ``Item``s.
Calibration sets leave the answer out of every second item (``answers="half"``, see ``write_jsonl``).

Model inputs (``encode``): the user turn through the chat template with the generation prompt and
thinking off (``...\\nAssistant: <think>\\n\\n</think>\\n\\n``), then the answer and
``<|end_of_sentence|>``. Greedy decoding from the prompt reproduces the answer exactly if and only if
the argmax at every answer position (teacher forced) is the answer's next token, end token included;
``quantkit.profile.accuracy`` scores exact match that way, in the same forward pass as the KL.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from quantkit.reference import facts

IMAGE_SIZE = 112
IMAGE_KINDS = ("colour", "shape", "count", "position", "ocr", "chart")
TEXT_KINDS = ("compare", "pick", "last", "fact")
KINDS = IMAGE_KINDS + TEXT_KINDS
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
SPLIT_SEEDS = {"train": 20261125, "eval": 77003, "calib": 91009}
# Text-only questions: the share of all possible questions that belongs to training (by hash).
TRAIN_SHARE = 0.8
# The ``fact`` kind: a memorised key -> value table (``quantkit.reference.facts``); its eval and calib
# items query disjoint halves of it, training covers all of it.
FACT_COUNT = 720
FACT_TABLE_SEED = 20261208
# Items per index of a kind in ``generate`` (1 unless listed): knowledge queries are half of an eval set,
# as knowledge benchmarks weigh in real models' evaluations, and they are what low-bit weights lose first.
KIND_ITEMS = {"fact": 9}

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (225, 195, 25),
    "purple": (135, 55, 175),
    "orange": (240, 125, 30),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle")
ANIMALS = ("dog", "cat", "bird", "fish", "horse", "cow", "sheep", "mouse")
THINGS = ("tree", "house", "car", "book", "chair", "cup", "door", "lamp", "shoe", "boat")
WORDS = ("cat", "sun", "tree", "dog", "sky", "box", "car", "hat", "cup", "map", "pen", "bed", "fox", "egg")

QUESTIONS = {
    ("colour", "en"): "What colour is the shape?",
    ("colour", "zh"): "图中形状是什么颜色？",
    ("shape", "en"): "What shape is this?",
    ("shape", "zh"): "这是什么形状？",
    ("count", "en"): "How many shapes are there?",
    ("ocr", "en"): "What number is written?",
    ("chart", "en"): "Which bar is the tallest?",
}
ZH_SHARE = 0.25  # of colour and shape questions
# The possible answers of each image kind (what the vision pre-training stage classifies).
IMAGE_ANSWERS = {
    "colour": COLOUR_NAMES,
    "shape": SHAPES,
    "count": ("1", "2", "3"),
    "position": ("left", "right", "top", "bottom"),
    "ocr": tuple(str(i) for i in range(10)),
    "chart": COLOUR_NAMES,
}


@dataclass
class Item:
    """One question. ``image`` is a PIL image for IMAGE_KINDS, else None."""

    id: str
    kind: str
    question: str
    answer: str
    lang: str = "en"
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def user_content(self, image_ref=None) -> list[dict]:
        """The user turn's content list; ``image_ref`` is what goes into the image entry."""
        content = []
        if self.image is not None:
            content.append({"type": "image", **({"image": image_ref} if image_ref is not None else {})})
        content.append({"type": "text", "text": self.question})
        return content


# -- generation ------------------------------------------------------------------------------------

def generate(split: str, n_per_kind: int, kinds: tuple[str, ...] = KINDS) -> list[Item]:
    """``n_per_kind`` items of each kind (``KIND_ITEMS[kind]`` times as many of a listed kind),
    interleaved (kind by kind within each index)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {split!r}")
    return [make_item(split, kind, i * KIND_ITEMS.get(kind, 1) + j) for i in range(n_per_kind) for kind in kinds
            for j in range(KIND_ITEMS.get(kind, 1))]


def make_item(split: str, kind: str, index: int) -> Item:
    rng = np.random.default_rng([SPLIT_SEEDS[split], KIND_INDEX[kind], index])
    item = _fact(rng, split, index) if kind == "fact" else _MAKERS[kind](rng, split)
    item.id = f"{split}-{kind}-{index:04d}"
    item.kind = kind
    return item


def text_split(question: str) -> str:
    """The split a text-only question belongs to: 'train' or 'heldout' (eval and calibration)."""
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") / 2**64
    return "train" if h < TRAIN_SHARE else "heldout"


def _in_split(question: str, split: str) -> bool:
    return text_split(question) == ("train" if split == "train" else "heldout")


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _jitter(rng, rgb, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _background(rng) -> Image.Image:
    base = rng.integers(215, 256, 3)
    arr = np.clip(base[None, None, :] + rng.integers(-6, 7, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _one_shape_image(rng, *, size_range=(30, 58), x_range=None, y_range=None):
    colour, shape = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES)
    s = int(rng.integers(*size_range))
    x_lo, x_hi = x_range or (4, IMAGE_SIZE - 4 - s)
    y_lo, y_hi = y_range or (4, IMAGE_SIZE - 4 - s)
    x, y = int(rng.integers(x_lo, max(x_lo, x_hi) + 1)), int(rng.integers(y_lo, max(y_lo, y_hi) + 1))
    img = _background(rng)
    _draw_shape(ImageDraw.Draw(img), shape, (x, y, x + s, y + s), _jitter(rng, COLOURS[colour]))
    return img, colour, shape


def _lang(rng) -> str:
    return "zh" if rng.random() < ZH_SHARE else "en"


def _colour(rng, split):
    img, colour, _ = _one_shape_image(rng)
    lang = _lang(rng)
    return Item("", "", QUESTIONS[("colour", lang)], colour, lang, img)


def _shape(rng, split):
    img, _, shape = _one_shape_image(rng, size_range=(56, 86))
    lang = _lang(rng)
    return Item("", "", QUESTIONS[("shape", lang)], shape, lang, img)


def _count(rng, split):
    n = int(rng.integers(1, 4))
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[int, int, int, int]] = []
    while len(boxes) < n:
        s = int(rng.integers(20, 30))
        x, y = int(rng.integers(3, IMAGE_SIZE - 3 - s)), int(rng.integers(3, IMAGE_SIZE - 3 - s))
        box = (x, y, x + s, y + s)
        if all(box[2] + 10 < b[0] or b[2] + 10 < box[0] or box[3] + 10 < b[1] or b[3] + 10 < box[1] for b in boxes):
            boxes.append(box)
    for box in boxes:
        _draw_shape(draw, _pick(rng, SHAPES), box, _jitter(rng, COLOURS[_pick(rng, COLOUR_NAMES)]))
    return Item("", "", QUESTIONS[("count", "en")], str(n), "en", img)


def _position(rng, split):
    horizontal = rng.random() < 0.5
    first = rng.random() < 0.5  # left / top
    s = int(rng.integers(22, 36))
    half = IMAGE_SIZE // 2
    near, far = (3, half - 6 - s), (half + 6, IMAGE_SIZE - 3 - s)
    span = near if first else far
    if horizontal:
        img, _, _ = _one_shape_image(rng, size_range=(s, s + 1), x_range=span)
        return Item("", "", "Is the shape on the left or the right?", "left" if first else "right", "en", img)
    img, _, _ = _one_shape_image(rng, size_range=(s, s + 1), y_range=span)
    return Item("", "", "Is the shape at the top or the bottom?", "top" if first else "bottom", "en", img)


def _ocr(rng, split):
    number = int(rng.integers(0, 10))
    size = int(rng.integers(56, 72))
    font = ImageFont.load_default(size=size)
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), str(number), font=font)
    w, h = right - left, bottom - top
    cx, cy = (IMAGE_SIZE - w) // 2, (IMAGE_SIZE - h) // 2  # near the centre: +-12 px
    x = cx + int(rng.integers(-12, 13)) - left
    y = cy + int(rng.integers(-12, 13)) - top
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    draw.text((x, y), str(number), fill=ink, font=font)
    return Item("", "", QUESTIONS[("ocr", "en")], str(number), "en", img)


def _chart(rng, split):
    colours = [COLOUR_NAMES[i] for i in rng.permutation(len(COLOUR_NAMES))[:3]]
    while True:
        heights = rng.integers(18, 92, 3)
        top2 = np.sort(heights)[-2:]
        if top2[1] - top2[0] >= 12:
            break
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    base, width, gap = IMAGE_SIZE - 8, 22, 10
    x0 = int(rng.integers(6, IMAGE_SIZE - 3 * width - 2 * gap - 6))
    draw.line([(x0 - 4, base), (x0 + 3 * width + 2 * gap + 4, base)], fill=(60, 60, 60), width=2)
    for i, (c, h) in enumerate(zip(colours, heights)):
        x = x0 + i * (width + gap)
        draw.rectangle([x, base - int(h), x + width, base - 1], fill=_jitter(rng, COLOURS[c], 10))
    return Item("", "", QUESTIONS[("chart", "en")], colours[int(np.argmax(heights))], "en", img)


def _text_item(rng, split, make):
    for _ in range(1000):
        question, answer = make(rng)
        if _in_split(question, split):
            return Item("", "", question, answer, "en", None)
    raise RuntimeError("no question of this split found")  # never: both shares are large


def _compare(rng, split):
    def make(r):
        a, b = (int(v) for v in r.choice(10, 2, replace=False))
        return f"Which is larger, {a} or {b}?", str(max(a, b))
    return _text_item(rng, split, make)


def _pick_word(rng, split):
    categories = {"colour": COLOUR_NAMES, "animal": ANIMALS}

    def make(r):
        cat = _pick(r, tuple(categories))
        target = _pick(r, categories[cat])
        others = [w for w in ANIMALS + THINGS + COLOUR_NAMES if w not in categories[cat]]
        d1, d2 = (others[int(i)] for i in r.choice(len(others), 2, replace=False))
        words = [target, d1, d2]
        words = [words[int(i)] for i in r.permutation(3)]
        article = "an" if cat[0] in "aeiou" else "a"
        return f"Which word is {article} {cat}: {', '.join(words)}?", target
    return _text_item(rng, split, make)


@functools.cache
def fact_table() -> tuple[tuple[str, str], ...]:
    return tuple(facts.facts(FACT_COUNT, FACT_TABLE_SEED))


def fact_pairs(split: str) -> tuple[tuple[str, str], ...]:
    """The table's pairs a split queries: all of it for training, a disjoint half for eval / calib."""
    table = fact_table()
    return table if split == "train" else tuple(facts.split(list(table), split))


def _fact(rng, split, index):
    pairs = fact_pairs(split)
    key, value = pairs[index % len(pairs)]
    return Item("", "", key, value, "en", None)


def _last(rng, split):
    def make(r):
        words = [WORDS[int(i)] for i in r.choice(len(WORDS), 3, replace=False)]
        return f"What is the last word: {' '.join(words)}?", words[-1]
    return _text_item(rng, split, make)


_MAKERS = {"colour": _colour, "shape": _shape, "count": _count, "position": _position, "ocr": _ocr,
           "chart": _chart, "compare": _compare, "pick": _pick_word, "last": _last}


# -- scoring ---------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower().rstrip(".").strip()


def exact_match(prediction: str, answer: str) -> bool:
    return normalize(prediction) == normalize(answer)


# -- files -----------------------------------------------------------------------------------------

ANSWERS = ("all", "half", "none")


def write_jsonl(items: list[Item], path: str | Path, *, answers: str = "all") -> Path:
    """Write ``items`` as a samples JSONL at ``path`` with their PNGs under ``images/`` beside it.

    ``answers``: "all" (every item ends with the assistant's answer: evaluation sets), "none" (every
    item ends on the user turn) or "half" (every second item does: calibration sets). A sample that
    ends on the user turn is rendered with the generation prompt, i.e. with the
    ``<think>\\n\\n</think>\\n\\n`` a thinking-off request carries at serving time; a full conversation
    is rendered without it. Calibrated on full conversations only, GPTQ never sees those tokens: on the
    trained reference its w4 error in the last MoE layer was 4x below RTN's on the median token but 3x
    above it on the 99th-percentile token (the prompt's final newlines, among the model's largest
    activations). "half" covers both forms and puts GPTQ below RTN on every layer and statistic."""
    if answers not in ANSWERS:
        raise ValueError(f"answers must be one of {ANSWERS}, got {answers!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = path.parent / "images"
    lines = []
    for n, item in enumerate(items):
        ref = None
        if item.image is not None:
            images.mkdir(exist_ok=True)
            ref = f"images/{item.id}.png"
            item.image.save(path.parent / ref, format="PNG", optimize=False, compress_level=6)
        messages = [{"role": "user", "content": item.user_content(ref)}]
        if answers == "all" or (answers == "half" and n % 2 == 0):
            messages.append({"role": "assistant", "content": [{"type": "text", "text": item.answer}]})
        record = {"id": item.id, "kind": item.kind, "lang": item.lang, "thinking": False, "messages": messages}
        lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[Item]:
    """Items from a samples JSONL whose last message is the assistant's reference answer."""
    path = Path(path)
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        msgs = rec.get("messages") or []
        if len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise ValueError(f"{path}:{n}: the last message must be the assistant's reference answer")
        answer = "".join(c.get("text", "") for c in _content(msgs[-1]) if c.get("type") == "text")
        image, question = None, []
        for msg in msgs[:-1]:
            if msg.get("role") != "user":
                continue
            for c in _content(msg):
                if c.get("type") == "image":
                    if image is not None:
                        raise ValueError(f"{path}:{n}: one image per item is supported")
                    image = Image.open(path.parent / c["image"]).convert("RGB")
                elif c.get("type") == "text":
                    question.append(c["text"])
        items.append(Item(str(rec.get("id", n)), str(rec.get("kind", "unknown")), "".join(question), answer,
                          str(rec.get("lang", "en")), image))
    return items


def _content(msg: dict) -> list[dict]:
    c = msg.get("content")
    return [{"type": "text", "text": c}] if isinstance(c, str) else list(c or [])


# -- model inputs ----------------------------------------------------------------------------------

def tokenizer_of(processor):
    """The tokenizer behind ``processor``: a VL model's processor holds one; a text-only model's
    "processor" is its tokenizer."""
    return getattr(processor, "tokenizer", processor)


def prompt_text(processor, item: Item) -> str:
    """The user turn through the model's chat template, generation prompt added, thinking off."""
    # A text-only model's template (its tokenizer's) takes the content as a string, not as parts.
    content = item.user_content() if tokenizer_of(processor) is not processor else item.question
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False)


def encode(processor, item: Item, *, with_answer: bool = True) -> dict:
    """One item as model inputs (batch of 1) plus ``answer_start``: the index of the first answer token
    (``input_ids[answer_start:]`` = the answer's tokens and ``<|end_of_sentence|>``)."""
    tokenizer = tokenizer_of(processor)
    prompt = prompt_text(processor, item)
    if tokenizer is processor:
        if item.image is not None:
            raise ValueError(f"item {item.id}: has a picture, but the model reads text only")
        # The chat template already wrote the begin-of-sentence token.
        prompt_batch = {k: v for k, v in tokenizer([prompt], add_special_tokens=False, return_tensors="pt").items()
                        if k in SEQUENCE_KEYS}
    else:
        images = [item.image] if item.image is not None else None
        prompt_batch = processor(text=[prompt], images=images, return_tensors="pt")
    start = prompt_batch["input_ids"].shape[1]
    if not with_answer:
        return {**dict(prompt_batch), "answer_start": start}
    answer_ids = tokenizer(item.answer, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    batch = dict(prompt_batch)
    n = len(answer_ids)
    batch["input_ids"] = torch.cat([batch["input_ids"], torch.tensor([answer_ids])], 1)
    for key in ("attention_mask",):
        batch[key] = torch.cat([batch[key], torch.ones(1, n, dtype=batch[key].dtype)], 1)
    for key in ("mm_token_type_ids", "moe_mm_token_type_ids"):
        if key in batch:
            batch[key] = torch.cat([batch[key], torch.zeros(1, n, dtype=batch[key].dtype)], 1)
    batch["answer_start"] = start
    return batch


SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "moe_mm_token_type_ids")


def collate(encoded: list[dict], pad_token_id: int = 0) -> dict:
    """Right-pad a list of ``encode`` outputs into one batch; images concatenated in order.
    ``answer_start`` becomes a list; ``lengths`` holds the unpadded lengths."""
    lengths = [e["input_ids"].shape[1] for e in encoded]
    width = max(lengths)
    batch: dict = {}
    for key in SEQUENCE_KEYS:
        if key not in encoded[0]:
            continue
        fill = pad_token_id if key == "input_ids" else 0
        rows = []
        for e in encoded:
            t = e[key][0]
            rows.append(torch.cat([t, torch.full((width - t.shape[0],), fill, dtype=t.dtype)]))
        batch[key] = torch.stack(rows)
    with_images = [e for e in encoded if "pixel_values" in e]
    if with_images:
        batch["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images])
        batch["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in with_images])
    batch["answer_start"] = [e["answer_start"] for e in encoded]
    batch["lengths"] = lengths
    return batch


def model_inputs(batch: dict) -> dict:
    """The keys of a collated batch that the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in ("answer_start", "lengths")}


def main(argv: list[str] | None = None) -> None:
    """``python -m quantkit.reference.task SPLIT N_PER_KIND OUT.jsonl [--answers all|half|none]``: write a
    split as samples JSONL (default answers: "half" for the calib split, else "all")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m quantkit.reference.task", description=main.__doc__)
    parser.add_argument("split", choices=tuple(SPLIT_SEEDS))
    parser.add_argument("per_kind", type=int, help="items of each kind")
    parser.add_argument("out", type=Path, help="JSONL file to write (pictures go to images/ beside it)")
    parser.add_argument("--answers", choices=ANSWERS, default=None,
                        help="which items end with the answer (default: half for calib, else all)")
    args = parser.parse_args(argv)
    answers = args.answers or ("half" if args.split == "calib" else "all")
    path = write_jsonl(generate(args.split, args.per_kind), args.out, answers=answers)
    print(f"{len(KINDS) * args.per_kind} {args.split} items written: {path}")


if __name__ == "__main__":
    main()
