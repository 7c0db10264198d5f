"""`quantkit export-onnx --component vision`: the exported vision tower + resampler must match torch within
1e-4 on three image sizes (none of them needs a re-export), and ship inside the variant when asked."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from quantkit.cli import main
from quantkit.errors import VariantCorrupt
from quantkit.manifest import read_manifest
from quantkit.verify import export_vision_onnx, verify

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tiny_vl_w4, tmp_path_factory):
    """A copy of the 4-bit variant with the vision ONNX exported into it (the default --out)."""
    d = tmp_path_factory.mktemp("onnx") / "w4"
    shutil.copytree(tiny_vl_w4, d)
    errors = export_vision_onnx(d)
    return d, errors


def test_vision_onnx_matches_torch_on_three_image_sizes(exported):
    d, errors = exported
    assert list(errors) == ["56x56", "112x84", "112x112"]
    for size, err in errors.items():
        assert err < 1e-4, (size, err)
        print(f"vision ONNX vs torch, {size}: max abs error {err:.3g}")
    onnx_path = d / "onnx" / "vision.onnx"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["pixel_values", "position_ids"]
    assert sess.get_inputs()[0].shape[0] == "patches"  # one graph for any number of patches


def test_exported_file_ships_with_the_variant(exported):
    d, errors = exported
    m = read_manifest(d)
    assert "onnx/vision.onnx" in m["files"]
    rec = m["onnx"]["vision"]
    assert rec["max_abs_err_vs_torch"] == errors and rec["patches"] == {"56x56": 16, "112x84": 48, "112x112": 64}
    assert rec["one_image_per_call"] is True
    report = verify(d, runtimes=())  # the registered file keeps the variant's integrity
    assert report.integrity_ok, report.lines()


def test_onnx_equals_quantkit_load_image_features(exported):
    """The reference is torch's own path through the model quantkit.load builds."""
    from transformers.vision_utils import get_vision_position_ids

    from quantkit import load
    from quantkit.reference.inputs import vl_inputs, synthetic_image

    d, _ = exported
    model = load(d)
    batch = vl_inputs(d, image=synthetic_image(3, (84, 112)))
    pv, grid = batch["pixel_values"].float(), batch["image_grid_thw"]
    with torch.no_grad():
        ref = torch.cat(list(model.model.get_image_features(pixel_values=pv, image_grid_thw=grid).pooler_output))
    sess = ort.InferenceSession(str(d / "onnx" / "vision.onnx"), providers=["CPUExecutionProvider"])
    pos = get_vision_position_ids(grid, model.model.vision_tower.spatial_merge_size).to(torch.int64)
    got = sess.run(None, {"pixel_values": pv.numpy(), "position_ids": pos.numpy()})[0]
    assert got.shape == tuple(ref.shape) and np.abs(got - ref.numpy()).max() < 1e-4


def test_cli_export_to_a_standalone_file(tiny_vl_w4, tmp_path):
    out = tmp_path / "vision.onnx"
    before = (tiny_vl_w4 / "quantkit.json").read_bytes()
    r = CliRunner().invoke(main, ["export-onnx", str(tiny_vl_w4), "--component", "vision", "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["vision 56x56", "vision 112x84", "vision 112x112"]
    assert all(float(line.rsplit(" ", 1)[1]) < 1e-4 for line in lines[:3])
    assert lines[3] == f"onnx written: {out}" and out.is_file()
    assert (tiny_vl_w4 / "quantkit.json").read_bytes() == before  # a file outside the variant is not recorded


def test_export_needs_a_variant(tiny_vl, tmp_path):
    with pytest.raises(VariantCorrupt, match="no quantkit.json"):
        export_vision_onnx(tiny_vl, tmp_path / "x.onnx")
    r = CliRunner().invoke(main, ["export-onnx", str(tiny_vl), "--component", "vision"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ")
    assert json.loads((tiny_vl / "config.json").read_text())  # the source is untouched
