"""GGUF variants for llama.cpp (text ERNIE-4.5 MoE, arch `ernie4_5-moe`).

One job per module:
- `types.py`    scheme <-> GGML type and the exactness rules; block encoders/decoders; byte sizes
- `q2k.py`      the fixed grids GPTQ does not choose itself (Q2_K, Q3_K, Q4_1) and GPTQ/RTN on them
- `backend.py`  how the quantize pipeline solves and emits weights for a GGUF plan
- `writer.py`   the .gguf file: hyper-parameters, vocabulary, tensor names, experts stacked per layer
- `variant.py`  the variant directory (.gguf + side files + quantkit.json), atomically
- `reader.py`   a GGUF variant read back: blocks, dequantized weights by source name
- `export.py`   `quantkit export-gguf`: an existing GPTQ variant whose schemes map exactly
- `memory.py`   bytes by role from the file, llama.cpp RAM, the real ERNIE-4.5-21B-A3B table
- `verify.py`   `quantkit verify` for GGUF variants (file facts, llama.cpp, quantkit.load)
"""
