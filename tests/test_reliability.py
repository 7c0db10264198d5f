"""Issue 17: inputs and faults a user meets in the first hour, each answered in one clear line with a
non-zero exit, nothing left behind and the source untouched; and interrupted runs that continue.

Every CLI case goes through the real console entry point (click's runner) and asserts: exit 2 (130 for
Ctrl-C), one line on stderr, no traceback, no "internal error", no output or temp directory left, the
source's files unchanged.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from quantkit.cli import main

pytestmark = pytest.mark.slow


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def tree_sha(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).rglob("*")) if p.is_file()}


def assert_clean_failure(code, err, out_parent: Path, *fragments, exit_code=2):
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    if out_parent.exists():
        assert list(out_parent.iterdir()) == [], list(out_parent.iterdir())


@pytest.fixture
def model_copy(tiny_vl, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(tiny_vl, d)
    return d


def _edit_shard(d: Path, fn, holding: str) -> str:
    """Apply `fn` to the first shard holding a tensor whose name ends with `holding`."""
    for shard in sorted(d.glob("model-*.safetensors")):
        tensors = load_file(str(shard))
        if any(n.endswith(holding) for n in tensors):
            fn(tensors)
            save_file(tensors, str(shard), metadata={"format": "pt"})
            return shard.name
    raise AssertionError(f"no shard holds a *{holding}")


# -- item 2: NaN / Inf weights ---------------------------------------------------------------------

def test_nan_weight_is_one_line_naming_tensor_and_file_and_nothing_is_created(model_copy, tmp_path):
    def poison(t):
        name = next(n for n in sorted(t) if n.endswith("up_proj.weight"))
        t[name] = t[name].clone()
        t[name][0, 0] = float("nan")
        poison.name = name
    shard = _edit_shard(model_copy, poison, "up_proj.weight")
    before = tree_sha(model_copy)
    out = tmp_path / "new" / "deeper" / "v"
    code, _, err = run("quantize", model_copy, "--bits", 4, "--method", "rtn", "--out", out)
    assert_clean_failure(code, err, tmp_path / "new", poison.name, shard, "NaN or Inf")
    assert not (tmp_path / "new").exists()  # the parents it created are gone too
    assert tree_sha(model_copy) == before


# -- item 5: a relative path that does not exist ------------------------------------------------------

def test_missing_relative_path_says_no_local_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run("inspect", "models/ernie-typo")
    assert_clean_failure(code, err, tmp_path / "nothing", "no such local directory", "models/ernie-typo")


# -- item 6: inconsistent checkpoints ------------------------------------------------------------------

def test_index_naming_the_wrong_shard_is_refused(model_copy, tmp_path):
    index = model_copy / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    shards = sorted(set(data["weight_map"].values()))
    name = next(n for n, s in data["weight_map"].items() if s == shards[0])
    data["weight_map"][name] = shards[1]
    index.write_text(json.dumps(data))
    code, _, err = run("quantize", model_copy, "--bits", 4, "--method", "rtn", "--out", tmp_path / "o" / "v")
    assert_clean_failure(code, err, tmp_path / "o", name, shards[1], shards[0])


def test_tensor_stored_in_two_shards_is_refused(model_copy, tmp_path):
    shards = sorted(model_copy.glob("model-*.safetensors"))
    a, b = load_file(str(shards[0])), load_file(str(shards[1]))
    name = sorted(a)[0]
    b[name] = a[name].clone()
    save_file(b, str(shards[1]), metadata={"format": "pt"})
    code, _, err = run("plan", model_copy, "--bits", 4)
    assert_clean_failure(code, err, tmp_path / "none", name, "stored twice")


@pytest.mark.parametrize("field,value", [("hidden_size", 96), ("num_hidden_layers", 2)])
def test_config_disagreeing_with_the_tensors_is_refused(model_copy, tmp_path, field, value):
    cfg = json.loads((model_copy / "config.json").read_text())
    text = cfg["text_config"]
    assert text[field] != value
    text[field] = value
    (model_copy / "config.json").write_text(json.dumps(cfg))
    for method in ("rtn", "gptq"):
        code, _, err = run("quantize", model_copy, "--bits", 4, "--method", method, "--out", tmp_path / "o" / "v")
        assert_clean_failure(code, err, tmp_path / "o", "config.json")


def test_config_field_of_the_wrong_type_is_one_line(model_copy, tmp_path):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["text_config"]["moe_k"] = "two"
    (model_copy / "config.json").write_text(json.dumps(cfg))
    code, _, err = run("plan", model_copy, "--bits", 4)
    assert_clean_failure(code, err, tmp_path / "none", "config.json")


# -- item 16: corrupt safetensors headers -------------------------------------------------------------

def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


@pytest.mark.parametrize("edit,fragment", [
    (lambda h: h[sorted(k for k in h if k != "__metadata__")[0]].update(shape=[-3, 4]), "impossible shape"),
    (lambda h: h[sorted(k for k in h if k != "__metadata__")[0]].update(dtype="Q7"), "unknown dtype"),
    (lambda h: h[sorted(k for k in h if k != "__metadata__")[0]].update(shape=[10**6, 10**6]), "needs"),
])
def test_corrupt_header_is_one_line(model_copy, tmp_path, edit, fragment):
    shard = sorted(model_copy.glob("model-*.safetensors"))[0]
    _rewrite_header(shard, edit)
    code, _, err = run("inspect", model_copy)
    assert_clean_failure(code, err, tmp_path / "none", shard.name, fragment)


# -- item 7: links out of the model directory ---------------------------------------------------------

def test_side_file_linking_outside_is_never_copied(model_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    (model_copy / "notes.txt").symlink_to(secret)
    code, _, err = run("quantize", model_copy, "--bits", 4, "--method", "rtn", "--out", tmp_path / "o" / "v")
    assert_clean_failure(code, err, tmp_path / "o", "notes.txt", "outside the model directory")


# -- items 0 and 14: remote code is never run ---------------------------------------------------------

def test_remote_code_processor_is_never_run(model_copy, tmp_path):
    marker = tmp_path / "ran.txt"
    (model_copy / "custom_processing.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass EvilProcessor:\n    pass\n")
    cfg = json.loads((model_copy / "processor_config.json").read_text())
    cfg["auto_map"] = {"AutoProcessor": "custom_processing.EvilProcessor"}
    cfg["processor_class"] = "EvilProcessor"
    (model_copy / "processor_config.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(main, ["calibrate", str(model_copy), "--out", str(tmp_path / "o" / "c")], input="y\ny\ny\n")
    assert r.exit_code == 2, r.stderr
    assert_clean_failure(r.exit_code, r.stderr, tmp_path / "o", "remote code", "never runs")
    assert not marker.exists()


def test_remote_code_only_config_is_one_line(model_copy, tmp_path):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"] = "my_custom_moe"
    cfg["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (model_copy / "config.json").write_text(json.dumps(cfg))
    code, _, err = run("plan", model_copy, "--bits", 4)
    assert_clean_failure(code, err, tmp_path / "none", "my_custom_moe", "never runs")


# -- item 1: no chat template ------------------------------------------------------------------------

def test_checkpoint_without_chat_template_calibrates_as_plain_text(tiny_text, tmp_path):
    d = tmp_path / "base"
    shutil.copytree(tiny_text, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    for p in d.glob("chat_template.*"):
        p.unlink()
    samples = tmp_path / "s.jsonl"
    samples.write_text("\n".join(json.dumps({"id": f"s{i}", "messages": [
        {"role": "user", "content": f"Question number {i}: how many legs has a cat?"},
        {"role": "assistant", "content": "Four legs, like a dog."}]}) for i in range(4)) + "\n")
    code, _, err = run("quantize", d, "--bits", 4, "--samples", samples, "--out", tmp_path / "v")
    assert code == 0, err
    record = json.loads((tmp_path / "v" / "quantkit.json").read_text())["calibration"]["samples"]["chat_template"]
    assert record["source"] == "none" and "plain text" in record["note"]
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    code, _, err = run("quantize", d, "--bits", 4, "--samples", samples, "--chat-template", template,
                       "--out", tmp_path / "v2")
    assert code == 0, err
    record = json.loads((tmp_path / "v2" / "quantkit.json").read_text())["calibration"]["samples"]["chat_template"]
    assert record["source"] == "file" and record["sha256"] == hashlib.sha256(template.read_bytes()).hexdigest()


# -- item 15: options out of range ---------------------------------------------------------------------

@pytest.mark.parametrize("args,fragment", [(["--max-shard-size", "0"], "--max-shard-size 0"),
                                           (["--min-tokens", "-5"], "--min-tokens -5"),
                                           (["--max-tokens", "0"], "--max-tokens 0")])
def test_options_out_of_range(tiny_vl, tmp_path, args, fragment):
    code, _, err = run("quantize", tiny_vl, "--bits", 4, *args, "--out", tmp_path / "o" / "v")
    assert_clean_failure(code, err, tmp_path / "o", fragment)


# -- item 16: full disk, unwritable --out ------------------------------------------------------------

def test_full_disk_is_one_line(tiny_vl, tmp_path, monkeypatch):
    import quantkit.checkpoint as ck

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(a[1]) if len(a) > 1 else None)

    monkeypatch.setattr(ck, "save_file", full)
    code, _, err = run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", tmp_path / "o" / "v",
                       "--max-shard-size", "50KB")
    assert_clean_failure(code, err, tmp_path / "o", "No space left on device")


def test_unwritable_out_parent_is_one_line(tiny_vl, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # --out under a regular file: its parent cannot be created
    code, _, err = run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", blocker / "v")
    assert_clean_failure(code, err, tmp_path / "none", "--out", "cannot write there")


# -- item 9: two runs on one --out ---------------------------------------------------------------------

def test_second_run_on_the_same_out_is_refused(tiny_vl, tmp_path):
    out = tmp_path / "o" / "v"
    out.parent.mkdir()
    fd = os.open(out.with_name(".v.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242")
    try:
        code, _, err = run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", out)
    finally:
        os.close(fd)
    assert code == 2 and "another quantkit run (pid 4242) is writing it" in err, err
    assert not out.exists() and not out.with_name(".v.partial").exists()


# -- item 8: --overwrite never loses both ------------------------------------------------------------

def test_overwrite_cut_between_renames_keeps_the_old_variant(tiny_vl, tmp_path, monkeypatch):
    import quantkit.outdir as outdir

    out = tmp_path / "v"
    assert run("quantize", tiny_vl, "--bits", 8, "--method", "rtn", "--out", out)[0] == 0
    old = tree_sha(out)
    monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)  # a filesystem without RENAME_EXCHANGE
    real_replace, calls = os.replace, []

    def cut(src, dst):
        if Path(dst) in (out, out.with_name(".v.old")):  # the swap's two renames (not the writers' own)
            calls.append((src, dst))
            if len(calls) == 2:  # the kill lands between `out -> .out.old` and `new -> out`
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(outdir.os, "replace", cut)
    code, _, err = run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", out, "--overwrite")
    assert code == 130
    monkeypatch.setattr(outdir.os, "replace", real_replace)
    assert not out.exists() and out.with_name(".v.old").exists()
    # the next run on --out puts the old variant back before anything else
    code, _, err = run("quantize", tiny_vl, "--bits", 8, "--method", "rtn", "--out", out)
    assert code == 2 and "already exists" in err
    assert tree_sha(out) == old


def test_overwrite_swaps_atomically(tiny_vl, tmp_path):
    out = tmp_path / "v"
    assert run("quantize", tiny_vl, "--bits", 8, "--method", "rtn", "--out", out)[0] == 0
    assert run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", out, "--overwrite")[0] == 0
    m = json.loads((out / "quantkit.json").read_text())
    assert "rtn-w4" in json.dumps(m["tensors"]) and sorted(p.name for p in tmp_path.iterdir()) == ["v"]


# -- progress a person can read ------------------------------------------------------------------

def test_progress_bars_on_a_terminal_and_plain_lines_in_a_log(tiny_vl, tmp_path):
    import io

    from quantkit.api import QuantizeOptions, quantize
    from quantkit.progress import ConsoleLog

    term, plain = io.StringIO(), io.StringIO()
    quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path / "a", bits=4), log=ConsoleLog(term, bars=True))
    quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path / "b", bits=4), log=ConsoleLog(plain, bars=False))
    bars = term.getvalue()
    # tqdm bars per stage: calibration samples, layers (with rate/ETA), tensors solved per layer
    assert "encode samples" in bars and "100%" in bars and "quantize" in bars and "layer 1 tensors" in bars
    assert "\r" in bars and ("s/layer" in bars or "layer/s" in bars)
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue()
    assert [line for line in lines if line.startswith("quantize: layer")] == \
        ["quantize: layer 1/3", "quantize: layer 2/3", "quantize: layer 3/3"]
