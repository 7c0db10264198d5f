"""Opening a GGUF in llama.cpp (llama-cpp-python), as quantkit's checks, tests and benchmarks run it.

On CPUs with AMX (Intel Sapphire Rapids and later) llama.cpp repacks quantized weights into its AMX
"extra" buffer type at load, and its AMX matmul segfaults on MoE models: measured with
llama-cpp-python 0.3.36 (built here with GGML_NATIVE) on quantkit's Q3_K / Q4_0 files and on llama.cpp's
own Q3_K_M / Q4_K_M of the same checkpoint, in the first decode (ggml-org/llama.cpp#20824, "segfault in
ggml_backend_amx_mul_mat", closed without a fix). A segfault takes the whole process down, so `verify`
would die instead of reporting. llama.cpp's switch is the model parameter `use_extra_bufts`
(`--no-repack` in its tools); llama-cpp-python's `Llama` does not expose it, so its default model
parameters are replaced while the model loads. Without the extra buffer types llama.cpp runs the same
types with its plain CPU kernels.
"""
from __future__ import annotations

from pathlib import Path


def open_llama(path: str | Path, **kwargs):
    """`llama_cpp.Llama(model_path=path, **kwargs)` with llama.cpp's extra CPU buffer types off."""
    import llama_cpp
    import llama_cpp.llama as api

    default = api.llama_cpp.llama_model_default_params

    def params():
        p = default()
        if hasattr(p, "use_extra_bufts"):  # llama.cpp builds before the switch have no AMX repacking either
            p.use_extra_bufts = False
        return p

    api.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    finally:
        api.llama_cpp.llama_model_default_params = default
