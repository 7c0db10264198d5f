import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open

from quantkit.checkpoint import INDEX_NAME, Checkpoint, ShardWriter
from quantkit.outdir import atomic_output_dir
from quantkit.errors import CheckpointError, OutputError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_lazy_reads_match_the_files(tiny_vl):
    ckpt = Checkpoint.open(tiny_vl)
    index = json.loads((tiny_vl / INDEX_NAME).read_text())["weight_map"]
    assert ckpt.names() == sorted(index)
    assert len({i.shard for i in ckpt.infos()}) > 1  # really sharded
    for name in ckpt.names()[::7]:
        with safe_open(tiny_vl / index[name], "pt") as f:
            assert torch.equal(ckpt.read(name), f.get_tensor(name))
        info = ckpt.info(name)
        assert tuple(ckpt.read(name).shape) == info.shape
    names = ckpt.names()[:5]
    many = ckpt.read_many(names)
    assert all(torch.equal(many[n], ckpt.read(n)) for n in names)


def test_missing_shard_is_a_clear_error(tiny_vl, tmp_path):
    d = _copy(tiny_vl, tmp_path / "m")
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        Checkpoint.open(d)


def test_truncated_shard_is_a_clear_error(tiny_vl, tmp_path):
    d = _copy(tiny_vl, tmp_path / "m")
    shard = sorted(d.glob("model-*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Checkpoint.open(d)


def test_garbage_shard_is_a_clear_error(tiny_vl, tmp_path):
    d = _copy(tiny_vl, tmp_path / "m")
    shard = sorted(d.glob("model-*.safetensors"))[0]
    shard.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Checkpoint.open(d)


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="baidu/ERNIE-4.5-VL-28B-A3B-PT"):
        Checkpoint.open("baidu/ERNIE-4.5-VL-28B-A3B-PT")
    with pytest.raises(CheckpointError, match="no such directory"):
        Checkpoint.open(str(tmp_path / "nope" / "deeper" / "x"))


def test_shard_writer_bounds_shards_and_indexes_everything(tmp_path):
    tensors = {f"t{i}": torch.full((100,), float(i)) for i in range(10)}  # 400 bytes each
    w = ShardWriter(tmp_path, max_shard_bytes=1000)
    for n, t in tensors.items():
        w.add(n, t)
    shards = w.close()
    assert len(shards) == 5
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == 4000
    for shard in shards:
        with safe_open(tmp_path / shard, "pt") as f:
            assert sum(f.get_tensor(k).numel() * 4 for k in f.keys()) <= 1000
    (tmp_path / "config.json").write_text('{"model_type": "x"}')
    ckpt = Checkpoint.open(tmp_path)
    assert all(torch.equal(ckpt.read(n), t) for n, t in tensors.items())
    with pytest.raises(ValueError, match="twice"):
        w2 = ShardWriter(tmp_path / "x")
        w2.add("a", torch.zeros(1))
        w2.add("a", torch.zeros(1))


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "variant"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half-written.safetensors").write_bytes(b"x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with atomic_output_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(os.listdir(out)) == ["b"] and sorted(os.listdir(tmp_path)) == ["variant"]
