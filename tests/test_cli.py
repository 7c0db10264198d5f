"""The command line: tables for people, and one clear line plus a non-zero exit for bad input."""
import json
import os
import shutil

from click.testing import CliRunner

from quantkit.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert "Traceback" not in err


def test_inspect_prints_roles_and_moe_shape(tiny_vl):
    code, out, _ = run("inspect", tiny_vl)
    assert code == 0
    assert "8 text (width 64), 8 vision (width 32)" in out and "top-2" in out
    for label in ("routed_expert.text", "routed_expert.vision", "router.text", "router.vision", "router_bias",
                  "vision_tower", "resampler", "embedding", "attention", "shared_expert", "norm", "total"):
        assert label in out, label


def test_plan_shows_fallbacks(tiny_vl):
    code, out, _ = run("plan", tiny_vl, "--bits", 4)
    assert code == 0 and "ernie45-vl-w4" in out and "note:" in out and "does not divide" in out


def test_wrong_bits(tiny_vl, tmp_path):
    code, _, err = run("quantize", tiny_vl, "--bits", 9, "--method", "rtn", "--out", tmp_path / "v")
    assert_one_line_error(code, err, "--bits 9")
    assert not (tmp_path / "v").exists()


def test_unknown_profile_key(tiny_vl, tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("family: ernie45_vl\nrules:\n  - role: routed_expert\n    bitz: 4\n")
    code, _, err = run("quantize", tiny_vl, "--profile", prof, "--out", tmp_path / "v")
    assert_one_line_error(code, err, str(prof), "bitz")


def test_unsupported_architecture(tiny_vl, tmp_path):
    d = tmp_path / "llama"
    shutil.copytree(tiny_vl, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    code, _, err = run("quantize", d, "--bits", 4, "--out", tmp_path / "v")
    assert_one_line_error(code, err, str(d / "config.json"), "unsupported architecture")


def test_missing_and_corrupted_shards(tiny_vl, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_vl, d)
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    code, _, err = run("quantize", d, "--bits", 4, "--method", "rtn", "--out", tmp_path / "v")
    assert_one_line_error(code, err, shard.name)
    shard.unlink()
    code, _, err = run("inspect", d)
    assert_one_line_error(code, err, shard.name, "missing")


def test_output_exists_needs_overwrite(tiny_vl, tmp_path):
    out = tmp_path / "v"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run("quantize", tiny_vl, "--bits", 8, "--method", "rtn", "--out", out)
    assert_one_line_error(code, err, str(out), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    code, out_text, err = run("quantize", tiny_vl, "--bits", 8, "--method", "rtn", "--out", out, "--overwrite")
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "quantkit.json").is_file()


def test_out_inside_source_is_refused(tiny_vl):
    code, _, err = run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", tiny_vl / "w4")
    assert_one_line_error(code, err, "source")
    assert not (tiny_vl / "w4").exists()


def test_interrupted_write_leaves_nothing_behind(tiny_vl, tmp_path, monkeypatch):
    """Ctrl-C before any progress was checkpointed: nothing is left (issue 17: after a checkpoint the
    progress is kept for --resume instead; see the next test and tests/test_resume.py)."""
    from quantkit.checkpoint import Checkpoint

    def interrupted(self, name):
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "read", interrupted)
    parent = tmp_path / "outs"
    parent.mkdir()
    code, _, err = run("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", parent / "v",
                       "--max-shard-size", "50KB")
    assert code == 130 and "nothing was written" in err
    assert os.listdir(parent) == []


def test_interrupted_write_keeps_progress_for_resume(tiny_vl, tmp_path, monkeypatch):
    import quantkit.quantize.pipeline as api

    calls = {"n": 0}
    real = api.quantize_rtn

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(api, "quantize_rtn", flaky)
    parent = tmp_path / "outs"
    parent.mkdir()
    args = ("quantize", tiny_vl, "--bits", 4, "--method", "rtn", "--out", parent / "v", "--max-shard-size", "50KB")
    code, _, err = run(*args)
    assert code == 130 and "progress kept in" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert calls["n"] == 20
    assert os.listdir(parent) == [".v.partial"]
    monkeypatch.setattr(api, "quantize_rtn", real)
    code, _, err = run(*args, "--resume")
    assert code == 0, err
    assert os.listdir(parent) == ["v"]
