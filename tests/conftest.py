import os

# 2 cores and noisy neighbours: oversubscribed threads make small forwards 100x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_vl(tmp_path_factory):
    """The tiny ERNIE-4.5-VL (real class, Hub layout, sharded), built once per session."""
    from quantkit.reference.tiny import build_tiny_vl
    return build_tiny_vl(tmp_path_factory.mktemp("models") / "tiny-vl", seed=0)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    from quantkit.reference.tiny import build_tiny_text_moe
    return build_tiny_text_moe(tmp_path_factory.mktemp("models") / "tiny-text", seed=0)


@pytest.fixture(scope="session")
def tiny_vl_w4(tiny_vl, tmp_path_factory):
    """A 4-bit RTN variant of the tiny VL model, written through the public API."""
    from quantkit.api import QuantizeOptions, quantize
    out = tmp_path_factory.mktemp("variants") / "tiny-vl-w4"
    return quantize(QuantizeOptions(model=str(tiny_vl), out=out, bits=4, method="rtn", max_shard_size="300KB"))
