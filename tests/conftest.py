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


@pytest.fixture(scope="session")
def tiny_text_gguf(tiny_text, tmp_path_factory):
    """GGUF variants of the tiny text MoE: GPTQ at 8, 4, 3 and 2 bits (Q8_0, Q4_K, Q3_K, Q2_K experts),
    round-to-nearest in the Q2_K layout, and GPTQ on the other K-quants (gate Q4_K, up Q5_K, down
    Q6_K), from one calibration on the shipped set's first text-only samples. Returns {"calib": dir,
    "samples": file, "w8": dir, "w4": dir, "w3": dir, "w2": dir, "w2-rtn": dir, "wk": dir, "k_profile": wk's profile}."""
    import json

    from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, quantize
    from quantkit.calibrate.samples import DEFAULT_SET_DIR as DEFAULT_SAMPLES

    root = tmp_path_factory.mktemp("gguf")
    text_only = [line for line in (DEFAULT_SAMPLES / "samples.jsonl").read_text().splitlines()
                 if all(c["type"] == "text" for m in json.loads(line)["messages"]
                        for c in (m["content"] if isinstance(m["content"], list) else []))]
    samples = root / "text.jsonl"
    samples.write_text("\n".join(text_only[:5]) + "\n")
    calib, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=root / "calib", samples=str(samples)))
    out = {"calib": calib, "samples": samples}
    for name, bits, method in (("w8", 8, None), ("w4", 4, None), ("w3", 3, None), ("w2", 2, None), ("w2-rtn", 2, "rtn")):
        out[name] = quantize(QuantizeOptions(model=str(tiny_text), out=root / name, bits=bits, format="gguf",
                                             method=method, calib=calib if method is None else None))
    k_profile = root / "k-quants.yaml"  # one K-quant per projection: gate Q4_K, up Q5_K, down Q6_K
    k_profile.write_text(K_QUANTS_PROFILE)
    out["wk"] = quantize(QuantizeOptions(model=str(tiny_text), out=root / "wk", profile=str(k_profile), calib=calib))
    out["k_profile"] = k_profile
    return out


K_QUANTS_PROFILE = """\
name: tiny-text-k-quants
family: ernie45_moe
format: gguf
rules:
  - role: [router, router_bias, norm, embedding, lm_head]
    keep: true
  - role: routed_expert
    name: gate_proj
    gguf_type: Q4_K
    method: gptq
  - role: routed_expert
    name: up_proj
    gguf_type: Q5_K
    method: gptq
  - role: routed_expert
    gguf_type: Q6_K
    method: gptq
  - role: [shared_expert, attention, dense_mlp]
    gguf_type: Q8_0
    method: gptq
"""
