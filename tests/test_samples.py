"""The default calibration set, its generator, the JSONL loader's errors and encoding with a real processor."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from quantkit.calibrate.samples import DEFAULT_SET_DIR, encode_sample, load_samples
from quantkit.errors import CalibrationError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = DEFAULT_SET_DIR
GENERATOR = REPO / "calibration" / "make_default_set.py"
KINDS = {"chart", "document", "table", "diagram", "grounding", "video", "multi_image", "dialogue", "reasoning"}


@pytest.fixture(scope="module")
def default_set():
    return load_samples(DEFAULT)


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_default_set", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def processor(tiny_vl):
    from transformers import AutoProcessor
    return AutoProcessor.from_pretrained(str(tiny_vl))


def first_of(sample_set, **attrs):
    return next(s for s in sample_set if all(getattr(s, k) == v for k, v in attrs.items()))


# ---- the committed default set ------------------------------------------------------------------------

def test_default_set_covers_the_model_uses(default_set):
    stats = default_set.stats()
    assert DEFAULT_SET_DIR == DEFAULT
    assert set(stats["by_kind"]) == KINDS
    assert {"en", "zh"} <= set(stats["by_lang"]) and len(stats["by_lang"]) >= 4
    assert 150 <= stats["samples"] <= 250
    assert stats["with_media"] >= 0.6 * stats["samples"]
    assert stats["videos"] > 0 and stats["images"] > 0 and stats["text_only"] > 0


def test_thinking_samples_put_reasoning_before_the_answer(default_set):
    thinking = [s for s in default_set if s.thinking]
    assert len(thinking) >= 10
    for sample in default_set:
        answer = sample.messages[-1]["content"][-1]["text"]
        assert sample.messages[-1]["role"] == "assistant"
        if sample.thinking:
            assert answer.startswith("<think>\n") and "\n</think>\n\n" in answer, sample.id
        else:
            assert "<think>" not in answer, sample.id


def test_default_set_pictures_are_resolved_and_small(default_set):
    pictures = {p for s in default_set for p in s.images + [f for v in s.videos for f in v]}
    assert all(p.is_absolute() and p.parent == DEFAULT / "images" for p in pictures)
    assert pictures == set((DEFAULT / "images").glob("*.png"))  # nothing unused is committed
    size = (DEFAULT / "samples.jsonl").stat().st_size + sum(p.stat().st_size for p in pictures)
    assert size < 4 * 1024 * 1024


def test_readme_states_the_current_counts(default_set):
    readme = (REPO / "calibration" / "README.md").read_text()
    stats = default_set.stats()
    assert f"**{stats['samples']} samples**" in readme
    assert f"**{stats['with_media']}** with pictures" in readme


def test_hash_is_stable_and_covers_every_byte(default_set, tmp_path):
    assert load_samples(DEFAULT).sha256 == default_set.sha256
    copy = Path(shutil.copytree(DEFAULT, tmp_path / "elsewhere"))
    assert load_samples(copy).sha256 == default_set.sha256  # absolute paths do not enter it

    picture = copy / "images" / "chart-000.png"
    img = Image.open(picture)
    img.putpixel((0, 0), (img.getpixel((0, 0)) + 1) % 16)  # a palette index: one pixel, one colour off
    img.save(picture)
    assert load_samples(copy).sha256 != default_set.sha256

    shutil.copy(DEFAULT / "images" / "chart-000.png", picture)
    assert load_samples(copy).sha256 == default_set.sha256
    jsonl = copy / "samples.jsonl"
    jsonl.write_bytes(jsonl.read_bytes().replace(b"Sat has", b"Sun has", 1))
    assert load_samples(copy).sha256 != default_set.sha256


# ---- the generator --------------------------------------------------------------------------------------

def test_generator_reproduces_the_committed_set(generator, tmp_path):
    committed = json.loads((DEFAULT / "manifest.json").read_text())["versions"]
    if committed != generator.library_versions():
        pytest.skip(f"pictures depend on the rendering libraries: committed with {committed}")
    generator.main(["--out", str(tmp_path)])
    assert (tmp_path / "samples.jsonl").read_bytes() == (DEFAULT / "samples.jsonl").read_bytes()
    ours = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert ours == sorted(p.name for p in (DEFAULT / "images").iterdir())
    differ = [n for n in ours if (tmp_path / "images" / n).read_bytes() != (DEFAULT / "images" / n).read_bytes()]
    assert not differ


def test_generator_subsets_are_deterministic(generator):
    records, files = generator.generate({"grounding", "video"})
    assert (records, files) == generator.generate({"grounding", "video"})
    committed = {r["id"]: r for r in map(json.loads, (DEFAULT / "samples.jsonl").read_text().splitlines())}
    assert all(r == committed[r["id"]] for r in records)  # a subset gives the same samples as the full set
    assert {r["kind"] for r in records} == {"grounding", "video"}


def test_generator_estimates_real_vision_tokens(generator):
    # 448x336 -> 16x12 merged patches; 4 frames of 224 px are scaled up to the video minimum (504x504).
    assert generator.real_vision_tokens((448, 336)) == 16 * 12 + 2
    assert generator.real_vision_tokens((224, 224), frames=4) == 2 * 18 * 18 + 2


# ---- loader errors: one line naming the file, line and sample -------------------------------------------

PNG = io.BytesIO()
Image.new("RGB", (56, 56), (200, 30, 30)).save(PNG, format="PNG")
PNG = PNG.getvalue()


def sample_record(sid: str = "s1", image: str = "pic.png") -> dict:
    return {"id": sid, "messages": [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Red."}]}


def write_set(root: Path, lines: list, pictures: dict[str, bytes] | None = None, name: str = "samples.jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for pic, data in (pictures or {}).items():
        (root / pic).write_bytes(data)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (root / name).write_text(text)
    return root / name


@pytest.mark.parametrize(("lines", "pictures", "error"), [
    ([sample_record()], {"pic.png": b"not a picture"}, r"samples.jsonl:1: sample 's1'.*cannot read picture .*pic.png"),
    ([sample_record()], {"pic.png": PNG[:60]}, r"samples.jsonl:1: sample 's1'.*cannot read picture"),
    ([sample_record()], {}, r"samples.jsonl:1: sample 's1'.*picture not found: .*pic.png"),
    ([], {}, r"no calibration samples \(the set is empty\)"),
    (["", "   "], {}, r"no calibration samples"),
    ([sample_record(), "{not json"], {"pic.png": PNG}, r"samples.jsonl:2: invalid JSON"),
    ([{"id": "s9"}], {}, r"samples.jsonl:1: sample 's9': missing 'messages'"),
    ([{"id": "s2", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}], {},
     r"samples.jsonl:1: sample 's2': messages\[0\].content\[0\]: unknown content type 'audio'"),
    ([{"id": "s3", "messages": [{"role": "robot", "content": "hi"}]}], {}, r"sample 's3': messages\[0\]: needs a role"),
    ([sample_record(), sample_record()], {"pic.png": PNG}, r"samples.jsonl:2: sample 's1': duplicate id"),
    ([sample_record(image="https://example.com/a.png")], {}, r"sample 's1'.*remote picture"),
    ([{"id": "v", "messages": [{"role": "user", "content": [{"type": "video", "video": []}]}]}], {},
     r"sample 'v'.*non-empty list of frame"),
])
def test_loader_errors_name_the_sample(tmp_path, lines, pictures, error):
    path = write_set(tmp_path, lines, pictures)
    with pytest.raises(CalibrationError, match=error):
        load_samples(path)


def test_loader_reads_every_jsonl_of_a_directory_and_string_content(tmp_path):
    write_set(tmp_path, [sample_record("a")], {"pic.png": PNG}, name="one.jsonl")
    write_set(tmp_path, [{"messages": [{"role": "user", "content": "Hello?"}]}], name="two.jsonl")
    loaded = load_samples(tmp_path)
    assert [s.id for s in loaded] == ["a", "two-1"]  # a missing id becomes FILE-LINE
    assert loaded.samples[1].messages[0]["content"] == [{"type": "text", "text": "Hello?"}]
    assert loaded.samples[0].images == [(tmp_path / "pic.png").resolve()]
    with pytest.raises(CalibrationError, match="no such calibration file"):
        load_samples(tmp_path / "absent.jsonl")


# ---- encoding with the tiny ERNIE-4.5-VL processor ------------------------------------------------------

def test_encode_marks_vision_tokens_only_for_picture_samples(processor, default_set):
    for kind in sorted(KINDS):
        sample = first_of(default_set, kind=kind)
        inputs = encode_sample(processor, sample)
        vision = int((inputs["moe_mm_token_type_ids"] != 0).sum())
        assert inputs["input_ids"].shape == inputs["attention_mask"].shape == inputs["moe_mm_token_type_ids"].shape
        if sample.has_media:
            assert vision > 0 and ("pixel_values" in inputs or "pixel_values_videos" in inputs), kind
        else:
            assert vision == 0 and "pixel_values" not in inputs, kind


def test_encode_video_and_multi_image_samples(processor, default_set):
    video = encode_sample(processor, first_of(default_set, kind="video"))
    assert video["video_grid_thw"].shape == (1, 3) and "pixel_values" not in video
    assert int((video["moe_mm_token_type_ids"] == 2).sum()) > 2  # frames, not just the start/end markers
    pair = encode_sample(processor, first_of(default_set, kind="multi_image"))
    assert pair["image_grid_thw"].shape == (2, 3)


def test_encode_keeps_the_reasoning_of_thinking_samples(processor, default_set):
    inputs = encode_sample(processor, first_of(default_set, thinking=True))
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "<think>" in text and "</think>" in text


def test_encode_rejects_samples_over_the_limit(processor, default_set):
    sample = default_set.samples[0]
    with pytest.raises(CalibrationError, match=rf"sample '{sample.id}': \d+ tokens, longer than the limit of 8"):
        encode_sample(processor, sample, max_tokens=8)
    with pytest.raises(CalibrationError, match="longer than the limit of 8"):
        next(load_samples(DEFAULT, max_tokens=8).encode(processor))


def test_encode_user_sets(processor, tmp_path):
    def ask(sid: str, text: str) -> dict:
        return {"id": sid, "messages": [{"role": "user", "content": text}]}

    lines = [sample_record("pic"), ask("question", "Why is the sky blue?"),
             ask("placeholder", "x <|IMAGE_PLACEHOLDER|> y"), ask("marker", "x <|IMAGE_START|> y")]
    loaded = load_samples(write_set(tmp_path, lines, {"pic.png": PNG}))
    assert encode_sample(processor, loaded.samples[0])["pixel_values"].shape[0] > 0
    open_question = encode_sample(processor, loaded.samples[1])  # ends on a user turn: generation prompt added
    assert "Assistant:" in processor.tokenizer.decode(open_question["input_ids"][0])
    with pytest.raises(CalibrationError, match="sample 'placeholder': the processor rejected it: .*no images"):
        encode_sample(processor, loaded.samples[2])
    with pytest.raises(CalibrationError, match="sample 'marker': text-only, yet the processor marks 1 of its tokens as vision"):
        encode_sample(processor, loaded.samples[3])


def test_encode_text_only_samples_with_a_text_model_tokenizer(tiny_vl, default_set):
    from transformers import AutoTokenizer

    from quantkit.reference.tokenizer import TEXT_CHAT_TEMPLATE
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_vl))
    tokenizer.chat_template = TEXT_CHAT_TEMPLATE  # ERNIE-4.5 text: content must reach it as a string
    sample = next(s for s in default_set if s.kind == "dialogue" and s.messages[0]["role"] == "system")
    inputs = encode_sample(tokenizer, sample)
    text = tokenizer.decode(inputs["input_ids"][0])
    assert set(inputs) >= {"input_ids", "attention_mask"} and "pixel_values" not in inputs
    assert sample.messages[1]["content"][0]["text"] in text
