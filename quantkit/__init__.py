"""quantkit: Mixture-of-Experts (vision-)language models -> deployable low-bit variants.

Pipeline: checkpoint -> plan -> calibrate -> quantize -> format -> verify -> profile -> publish
(ARCHITECTURE.md). Importing quantkit registers the shipped output formats (quantkit/formats).
"""
from . import formats  # noqa: F401  (registers the output formats with quantkit.format)
from .errors import QuantkitError
from .loader import load as _load
from .version import QUANTKIT_VERSION as __version__


def load(variant, dtype=None, *, verify=True):
    """A variant as a transformers model with its quantized weights unpacked (see quantkit.loader).
    `verify` (default) first checks every file's sha256 against quantkit.json; VariantCorrupt names
    the first that differs. `verify=False` skips that check."""
    import torch

    return _load(variant, dtype=dtype or torch.float32, verify=verify)


__all__ = ["QuantkitError", "__version__", "load"]
