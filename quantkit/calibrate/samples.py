"""Calibration samples: load and validate a JSONL set, and turn samples into model inputs.

A set is one JSONL file, or a directory holding ``samples.jsonl`` (else every ``*.jsonl`` in it). Each
line is one chat sample::

    {"id": "chart-000", "kind": "chart", "lang": "en", "thinking": false,
     "messages": [{"role": "user", "content": [{"type": "image", "image": "images/chart-000.png"},
                                               {"type": "text", "text": "Which bar is highest?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "Q3, with 42."}]}]}

Only ``messages`` is required. Roles are ``system``/``user``/``assistant``; content is a string or a
list of ``text``/``image``/``video`` items; a video is a list of frame images (optional ``"fps"``).
Relative paths are relative to the JSONL file. Loading opens every picture, so a set that loads is a
set that encodes; every problem is a one-line ``CalibrationError`` naming the file, line and sample.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from quantkit.errors import CalibrationError, UsageError

SAMPLES_FILE = "samples.jsonl"
ROLES = ("system", "user", "assistant")
DEFAULT_VIDEO_FPS = 2.0
# The set that ships with quantkit (package data; calibration/default in a checkout links to it), made
# by calibration/make_default_set.py.
DEFAULT_SET_DIR = Path(__file__).resolve().parents[1] / "data" / "default_calibration"


@dataclass(frozen=True)
class Sample:
    id: str
    kind: str
    lang: str
    thinking: bool
    messages: list[dict]  # content items as loaded, image/video paths made absolute
    source: str  # "file.jsonl:LINE", for messages

    @property
    def images(self) -> list[Path]:
        return [Path(item["image"]) for item in self._items() if item["type"] == "image"]

    @property
    def videos(self) -> list[list[Path]]:
        return [[Path(frame) for frame in item["video"]] for item in self._items() if item["type"] == "video"]

    @property
    def has_media(self) -> bool:
        """Whether it has pictures (images or video frames), i.e. tokens for the vision experts."""
        return any(item["type"] != "text" for item in self._items())

    def _items(self) -> Iterator[dict]:
        return (item for message in self.messages for item in message["content"])

    def where(self) -> str:
        return f"{self.source}: sample {self.id!r}"


@dataclass
class SampleSet:
    samples: list[Sample]
    sha256: str  # over the JSONL bytes and every referenced picture's bytes; paths do not enter it
    files: list[Path]
    max_tokens: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def stats(self) -> dict:
        items = [item for s in self.samples for m in s.messages for item in m["content"]]
        videos = [item for item in items if item["type"] == "video"]
        with_media = sum(s.has_media for s in self.samples)
        return {
            "samples": len(self.samples),
            "by_kind": dict(Counter(s.kind for s in self.samples)),
            "by_lang": dict(Counter(s.lang for s in self.samples)),
            "thinking": sum(s.thinking for s in self.samples),
            "with_media": with_media,
            "text_only": len(self.samples) - with_media,
            "images": sum(item["type"] == "image" for item in items),
            "videos": len(videos),
            "video_frames": sum(len(v["video"]) for v in videos),
        }

    def encode(self, processor) -> Iterator[dict[str, torch.Tensor]]:
        for sample in self.samples:
            yield encode_sample(processor, sample, max_tokens=self.max_tokens)


# ----------------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------------

def load_samples(path: str | Path, *, max_tokens: int | None = None) -> SampleSet:
    """Read and validate a JSONL file or a directory of them; every referenced picture is opened."""
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise UsageError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    files = _jsonl_files(Path(path))
    loader = _Loader()
    for file in files:
        loader.read_file(file)
    if not loader.samples:
        raise CalibrationError(f"{path}: no calibration samples (the set is empty)")
    return SampleSet(loader.samples, loader.hasher.hexdigest(), files, max_tokens)


def default_set_dir() -> Path:
    if not (DEFAULT_SET_DIR / SAMPLES_FILE).is_file():
        raise CalibrationError(f"the default calibration set is not at {DEFAULT_SET_DIR} (an incomplete install?); "
                            "pass --samples FILE.jsonl|DIR (or run calibration/make_default_set.py in a checkout)")
    return DEFAULT_SET_DIR


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        if (path / SAMPLES_FILE).is_file():
            return [path / SAMPLES_FILE]
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not files:
            raise CalibrationError(f"{path}: no {SAMPLES_FILE} or other *.jsonl file in this directory")
        return files
    if not path.is_file():
        raise CalibrationError(f"{path}: no such calibration file or directory")
    return [path]


@dataclass
class _Loader:
    samples: list[Sample] = field(default_factory=list)
    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    seen_ids: dict[str, str] = field(default_factory=dict)  # id -> where it was first defined
    checked: set[Path] = field(default_factory=set)  # pictures already opened and hashed

    def read_file(self, file: Path) -> None:
        data = file.read_bytes()
        _hash_chunk(self.hasher, data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CalibrationError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines() breaks on.
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                self.samples.append(self.read_line(file, lineno, line))

    def read_line(self, file: Path, lineno: int, line: str) -> Sample:
        where = f"{file}:{lineno}"
        record = _parse_json(where, line)
        sid = _sample_id(where, record, default=f"{file.stem}-{lineno}")
        where = f"{where}: sample {sid!r}"
        if sid in self.seen_ids:
            raise CalibrationError(f"{where}: duplicate id (first used at {self.seen_ids[sid]})")
        self.seen_ids[sid] = f"{file}:{lineno}"
        messages = [self.read_message(where, k, m, file.parent) for k, m in enumerate(_messages(where, record))]
        return Sample(id=sid, kind=_str_field(where, record, "kind", "custom"),
                      lang=_str_field(where, record, "lang", "unknown"), thinking=_thinking(where, record),
                      messages=messages, source=f"{file}:{lineno}")

    def read_message(self, where: str, k: int, message, base: Path) -> dict:
        where = f"{where}: messages[{k}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise CalibrationError(f"{where}: needs a role among {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content:
            raise CalibrationError(f"{where}: content must be a string or a non-empty list of items")
        items = [self.read_item(f"{where}.content[{j}]", item, base) for j, item in enumerate(content)]
        return {"role": message["role"], "content": items}

    def read_item(self, where: str, item, base: Path) -> dict:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise CalibrationError(f"{where}: a text item needs a string 'text'")
            return {"type": "text", "text": item["text"]}
        if kind == "image":
            return {"type": "image", "image": str(self.check_picture(where, item.get("image"), base))}
        if kind == "video":
            return self.read_video(where, item, base)
        raise CalibrationError(f"{where}: unknown content type {kind!r} (expected text, image or video)")

    def read_video(self, where: str, item: dict, base: Path) -> dict:
        frames = item.get("video")
        if not isinstance(frames, list) or not frames:
            raise CalibrationError(f"{where}: a video item needs 'video': a non-empty list of frame image paths")
        fps = item.get("fps", DEFAULT_VIDEO_FPS)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
            raise CalibrationError(f"{where}: 'fps' must be a positive number, got {fps!r}")
        paths = [str(self.check_picture(f"{where} frame {j}", f, base)) for j, f in enumerate(frames)]
        return {"type": "video", "video": paths, "fps": float(fps)}

    def check_picture(self, where: str, ref, base: Path) -> Path:
        """Resolve a picture reference, open and verify it once, and add its bytes to the hash."""
        path = _resolve(where, ref, base)
        if path not in self.checked:
            _hash_chunk(self.hasher, _read_picture(where, path))
            self.checked.add(path)
        return path


def _hash_chunk(hasher, data: bytes) -> None:
    # Length-prefixed, so moving bytes from one file to the next cannot give the same digest.
    hasher.update(len(data).to_bytes(8, "little"))
    hasher.update(data)


def _parse_json(where: str, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise CalibrationError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
    return record


def _sample_id(where: str, record: dict, default: str) -> str:
    sid = record.get("id", default)
    if not isinstance(sid, (str, int)) or isinstance(sid, bool) or sid == "":
        raise CalibrationError(f"{where}: 'id' must be a non-empty string, got {sid!r}")
    return str(sid)


def _messages(where: str, record: dict) -> list:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise CalibrationError(f"{where}: missing 'messages' (a non-empty list of chat turns)")
    return messages


def _str_field(where: str, record: dict, key: str, default: str) -> str:
    value = record.get(key, default)
    if not isinstance(value, str):
        raise CalibrationError(f"{where}: '{key}' must be a string, got {value!r}")
    return value


def _thinking(where: str, record: dict) -> bool:
    value = record.get("thinking", False)
    if not isinstance(value, bool):
        raise CalibrationError(f"{where}: 'thinking' must be true or false, got {value!r}")
    return value


def _resolve(where: str, ref, base: Path) -> Path:
    if not isinstance(ref, str) or not ref:
        raise CalibrationError(f"{where}: needs a picture path (string)")
    if ref.startswith(("http://", "https://")):
        raise CalibrationError(f"{where}: remote picture {ref!r} is not supported; download it and give its path")
    path = Path(ref.removeprefix("file://")).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _read_picture(where: str, path: Path) -> bytes:
    if not path.is_file():
        raise CalibrationError(f"{where}: picture not found: {path}")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # structure and checksums
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # verify() misses truncated pixel data
    except Exception as exc:  # PIL raises many types for broken files
        raise CalibrationError(f"{where}: cannot read picture {path}: {exc}") from None
    return data


# ----------------------------------------------------------------------------------------------------
# Encoding with a model's processor
# ----------------------------------------------------------------------------------------------------

def encode_sample(processor, sample: Sample, *, max_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """Render the sample with the processor's chat template and return its tensors (batch of one).

    Gives ``input_ids``, ``attention_mask`` and, for ERNIE-4.5-VL, ``mm_token_type_ids`` /
    ``moe_mm_token_type_ids`` plus ``pixel_values``/``image_grid_thw`` (and the video fields) when the
    sample has pictures. A text model's tokenizer works as ``processor`` for text-only samples.
    """
    text = render(processor, sample)
    media = _media_inputs(sample)
    try:
        batch = processor(text=[text], return_tensors="pt", **media)
    except Exception as exc:  # the processor's own checks (placeholder counts, sizes...)
        raise CalibrationError(f"{sample.where()}: the processor rejected it: {exc}") from None
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    length = inputs["input_ids"].shape[-1]
    if max_tokens is not None and length > max_tokens:
        raise CalibrationError(f"{sample.where()}: {length} tokens, longer than the limit of {max_tokens}; "
                            "shorten the sample (or smaller pictures) or raise the limit")
    _check_vision_tokens(sample, inputs)
    return inputs


def render(processor, sample: Sample) -> str:
    """The sample as the model reads it: through its chat template, or (a model without one) as plain
    text, turns joined by blank lines; pictures need a template to place their tokens."""
    if getattr(processor, "chat_template", None):
        add_prompt = sample.messages[-1]["role"] != "assistant"  # a sample may end on a question
        return processor.apply_chat_template(template_messages(sample), tokenize=False, add_generation_prompt=add_prompt)
    if sample.has_media:
        raise CalibrationError(f"{sample.where()}: the model has no chat template, and pictures need one to place "
                               "their tokens; pass --chat-template FILE")
    return "\n\n".join(item["text"] for m in sample.messages for item in m["content"])


def template_messages(sample: Sample) -> list[dict]:
    """The messages as the chat template sees them: placeholders for pictures, no paths or pixels.

    Text-only turns become plain strings: text-model templates (ERNIE-4.5 text) concatenate
    ``message.content`` as a string, and the VL templates accept both forms.
    """
    return [{"role": m["role"], "content": _template_content(m["content"])} for m in sample.messages]


def _template_content(items: list[dict]) -> str | list[dict]:
    if all(item["type"] == "text" for item in items):
        return "".join(item["text"] for item in items)
    return [item if item["type"] == "text" else {"type": item["type"]} for item in items]


def _media_inputs(sample: Sample) -> dict:
    kwargs = {}
    if sample.images:
        kwargs["images"] = [_load_rgb(sample, path) for path in sample.images]
    videos = [item for m in sample.messages for item in m["content"] if item["type"] == "video"]
    if videos:
        kwargs["videos"] = [[_load_rgb(sample, Path(f)) for f in v["video"]] for v in videos]
        # Frames come without container metadata; the processor needs the rate to time-stamp them.
        kwargs["video_metadata"] = [{"total_num_frames": len(v["video"]), "fps": v.get("fps", DEFAULT_VIDEO_FPS),
                                     "frames_indices": list(range(len(v["video"])))} for v in videos]
    return kwargs


def _load_rgb(sample: Sample, path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # moved or damaged since the set was loaded
        raise CalibrationError(f"{sample.where()}: cannot read picture {path}: {exc}") from None


def vision_mask(inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The tokens the processor marks as pictures (ERNIE-4.5-VL: moe_mm_token_type_ids, Qwen3-VL:
    mm_token_type_ids), as a bool tensor of the input's shape; None when it marks no modalities."""
    types = inputs.get("moe_mm_token_type_ids", inputs.get("mm_token_type_ids"))
    return None if types is None else types != 0


def _check_vision_tokens(sample: Sample, inputs: dict[str, torch.Tensor]) -> None:
    """The vision experts only see tokens the processor marks as vision: make sure that matches the sample."""
    marks = vision_mask(inputs)
    if marks is None:
        return  # this processor does not mark modalities
    vision = int(marks.sum())
    if sample.has_media and vision == 0:
        raise CalibrationError(f"{sample.where()}: it has pictures but no token is marked as vision; "
                            "does the chat template place the image/video placeholders?")
    if not sample.has_media and vision:
        raise CalibrationError(f"{sample.where()}: text-only, yet the processor marks {vision} of its tokens as "
                            "vision (does its text contain image or video marker tokens?)")
