"""`quantkit.load(variant)`: a transformers model whose quantized weights are decoded from the files.

The variant's format (its manifest says which) reads every tensor back in the source's key names,
quantized ones dequantized to fp32; the state then goes through transformers' own loading of the Hub
layout, so the model is the real class with the real key conversions. For evaluation on CPU, not
for serving.

Before reading anything, `load` checks the size and sha256 of every file `quantkit.json` lists
(weights, index, config, tokenizer and side files, the card) and raises `VariantCorrupt` naming the
first file that differs or is missing (`verify=False` skips this). Files the manifest does not list
are neither checked nor read. A directory without `quantkit.json` (a GPTQ checkpoint made
elsewhere) is loaded unchecked: there is nothing to check it against.

The directory's `generation_config.json` (end-of-turn ids, sampling defaults), when present, becomes
the model's generation config, as `from_pretrained(DIR)` would set it: built from a state dict,
transformers derives one from config.json alone, so `generate()` would not stop at the end of a chat
turn.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapters import adapter_for
from .checkpoint import Checkpoint
from .errors import CheckpointError, VariantCorrupt
from .format import format_of_variant
from .manifest import MANIFEST, verify_files


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the variant in the source's key names, quantized modules dequantized to fp32."""
    return format_of_variant(variant).dequantized_state_dict(Path(variant))


def check_checksums(variant: str | Path) -> int:
    """Every file `quantkit.json` lists has its recorded size and sha256; VariantCorrupt naming the
    first that does not. Returns the bytes hashed (0 without a manifest: nothing to check against)."""
    variant = Path(variant)
    if not (variant / MANIFEST).is_file():
        return 0
    report = verify_files(variant)
    bad = [p for p in report.problems if p.kind != "unlisted"]  # load reads only what the manifest lists
    if bad:
        more = f" (and {len(bad) - 1} more; `quantkit verify-files {variant}` lists them)" if len(bad) > 1 else ""
        raise VariantCorrupt(f"{variant / bad[0].path}: {str(bad[0]).split(': ', 1)[1]}{more}; restore the file or "
                             f"re-create the variant (quantkit.load(..., verify=False) loads it unchecked)")
    return report.bytes


def load(variant: str | Path, dtype: torch.dtype = torch.float32, *, verify: bool = True):
    """The variant as a transformers model (eval mode) with dequantized weights. `verify` (default)
    first checks every file against the sha256 in quantkit.json (`check_checksums`)."""
    variant = Path(variant)
    if verify:
        check_checksums(variant)
    try:
        config = json.loads((variant / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise VariantCorrupt(f"{variant / 'config.json'}: unreadable ({e.__class__.__name__}: {e})") from None
    if not isinstance(config, dict):
        raise VariantCorrupt(f"{variant / 'config.json'}: not a JSON object")
    adapter = adapter_for(config, where=str(variant / "config.json"))
    state = adapter.loadable_state(dequantized_state_dict(variant))
    return _model(adapter, state, dtype, variant, VariantCorrupt)


def load_source(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    """The unquantized source through the same path, so comparisons differ only in the weights."""
    ckpt = Checkpoint.open(model_dir)
    adapter = adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))
    state = {n: ckpt.read(n) for n in ckpt.names()}
    state = {n: (t.float() if t.is_floating_point() else t) for n, t in state.items()}
    return _model(adapter, state, dtype, ckpt.path, CheckpointError)


def _model(adapter, state: dict, dtype: torch.dtype, directory: Path, error: type[Exception]):
    """The adapter's transformers class from `state` (eval mode), with `directory`'s
    generation_config.json (module docstring); a file transformers cannot read raises `error` naming it."""
    from transformers import GenerationConfig

    model = adapter.model_class().from_pretrained(None, config=adapter.native_config(), state_dict=state,
                                                  dtype=dtype)
    path = Path(directory) / "generation_config.json"
    if path.is_file():
        try:
            model.generation_config = GenerationConfig.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, AttributeError) as e:  # unreadable, not JSON, not an object
            raise error(f"{path}: unreadable ({e.__class__.__name__}: {e}); fix or remove it") from None
    return model.eval()
