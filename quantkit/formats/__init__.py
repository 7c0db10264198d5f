"""The output formats, one package each, registered with the core's registry (quantkit.format).

A new format is a new package here implementing `quantkit.format.Format`, plus one line below.
Formats import the core; they never import each other (CI's layer contract).
"""
from ..format import register
from . import compressed_tensors, gguf, gptq

register(gptq.FORMAT)
register(gguf.FORMAT)
register(compressed_tensors.FORMAT)
