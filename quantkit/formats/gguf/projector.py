"""The vision projector file beside a vision-language model's .gguf (llama.cpp's `mmproj-*.gguf`, arch
`clip`, read by tools/mtmd), as convert_hf_to_gguf.py's MmprojModel writes it: `general.type = mmproj`,
the family's `clip.*` hyper-parameters and projector type (Adapter.gguf_projector), the processor's image
mean and std (processor_config.json / preprocessor_config.json), and the vision tower's tensors, kept at
their planned types (value-identical to the source; a Conv3d kernel stored as its 2-D halves).

The tensors are small next to the language model, so they are held until `close()` and written then.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch

from ...errors import CheckpointError, QuantkitError, VariantCorrupt
from ...plan import Plan
from .types import float_array, float_from_array
from .writer import GGUFTensor, _pad, add_hparams

ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]  # "clip"


def projector_layout(plan: Plan, adapter) -> list[GGUFTensor]:
    """The projector file's tensors in file order; each member is its source tensor."""
    spec = adapter.gguf_projector()
    if spec is None:
        return []
    entries = {e.name: e for e in plan.entries}
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, spec.block_count)
    out = []
    for t in spec.tensors:
        e = entries.get(t.source)
        if e is None:
            raise CheckpointError(f"checkpoint: no tensor {t.source}; llama.cpp's {spec.projector_type} projector needs it")
        if e.quantized:
            raise QuantkitError(f"tensor {t.source}: the {spec.projector_type} projector file keeps the vision tower "
                                "at source precision; keep it in the profile")
        name = t.gguf or tmap.get_name(t.tensor_map_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise QuantkitError(f"tensor {t.source}: no llama.cpp {ARCH} tensor takes it")
        shape = tuple(e.shape)
        if t.part is not None:
            shape = shape[:t.part_dim] + shape[t.part_dim + 1:]
        out.append(GGUFTensor(name, shape, e.storage, [t.source]))
    return out


def image_stats(model_dir: Path) -> tuple[list[float], list[float]]:
    """image_mean / image_std as llama.cpp's converter reads them (preprocessor_config.json, then
    processor_config.json's `image_processor`)."""
    cfg: dict = {}
    for fname, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        p = model_dir / fname
        if p.is_file():
            try:
                d = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{p}: unreadable ({e})") from None
            cfg.update((d.get(key) or {}) if key else d)
    if "image_mean" not in cfg or "image_std" not in cfg:
        raise CheckpointError(f"{model_dir}: no image_mean / image_std in preprocessor_config.json or "
                              "processor_config.json; the projector file records the processor's normalisation")
    return [float(x) for x in cfg["image_mean"]], [float(x) for x in cfg["image_std"]]


class ProjectorFile:
    """`add(source, tensor)` for every vision tensor, then `close()` writes the file."""

    def __init__(self, path: Path, model_dir: Path, adapter, plan: Plan, name: str):
        self.path = Path(path)
        self.spec = adapter.gguf_projector()
        self.layout = projector_layout(plan, adapter)
        self.model_dir = Path(model_dir)
        self.name = name
        self.mean_std = image_stats(self.model_dir)
        self._arrays: dict[str, np.ndarray] = {}
        self.header_bytes = 0

    @property
    def sources(self) -> set[str]:
        return {t.source for t in self.spec.tensors}

    def add(self, source: str, value) -> None:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: the projector file holds float tensors")
        for t, g in zip(self.spec.tensors, self.layout):
            if t.source != source:
                continue
            if g.name in self._arrays:
                raise ValueError(f"tensor {source} written twice")
            v = value if t.part is None else value.select(t.part_dim, t.part)
            self._arrays[g.name] = float_array(v.contiguous().reshape(g.shape), g.type)

    def _writer(self, path: Path) -> gguf.GGUFWriter:
        w = gguf.GGUFWriter(path, ARCH)
        w.add_type(gguf.GGUFType.MMPROJ)
        w.add_name(self.name)
        w.add_quantized_by("quantkit")
        types = [t.type for t in self.layout if len(t.shape) > 1]
        main = max(set(types), key=types.count) if types else "F32"
        w.add_file_type(int({"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                             "BF16": gguf.LlamaFileType.MOSTLY_BF16}.get(main, gguf.LlamaFileType.GUESSED)))
        w.add_clip_projector_type(self.spec.projector_type)
        add_hparams(w, self.spec.hparams)
        w.add_vision_image_mean(self.mean_std[0])
        w.add_vision_image_std(self.mean_std[1])
        for t in self.layout:
            raw = gguf.GGMLQuantizationType[t.type]
            dtype = {"F32": np.float32, "F16": np.float16}.get(t.type, np.uint8)
            w.add_tensor_info(t.name, t.byte_shape, np.dtype(dtype), t.nbytes,
                              raw_dtype=None if t.type in ("F32", "F16") else raw)
        return w

    def close(self) -> int:
        missing = [t.name for t in self.layout if t.name not in self._arrays]
        if missing:
            raise QuantkitError(f"internal: projector tensor {missing[0]} was never produced; please report this")
        w = self._writer(self.path)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        self.header_bytes = self.path.stat().st_size
        for t in self.layout:
            w.write_tensor_data(np.ascontiguousarray(self._arrays[t.name].reshape(t.byte_shape)))
        w.close()
        size = self.path.stat().st_size
        if size != self.predicted_bytes():
            raise QuantkitError(f"internal: wrote a {size}-byte projector file, predicted {self.predicted_bytes()}")
        return size

    def predicted_bytes(self) -> int:
        return _pad(self.header_bytes) + sum(_pad(t.nbytes) for t in self.layout)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.layout)


def read_projector(path: Path, adapter, shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The vision tensors of a projector file under their source names (parts stacked back)."""
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise VariantCorrupt(f"{path}: not a readable GGUF file ({e})")
    by_name = {t.name: t for t in reader.tensors}
    spec = adapter.gguf_projector()
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, spec.block_count)
    parts: dict[str, list] = {}
    for t in spec.tensors:
        name = t.gguf or tmap.get_name(t.tensor_map_name, try_suffixes=(".weight", ".bias"))
        g = by_name.get(name)
        if g is None:
            raise VariantCorrupt(f"{path}: projector tensor {name} (for {t.source}) is missing")
        parts.setdefault(t.source, []).append((t, g))
    out = {}
    for source, items in parts.items():
        shape = tuple(shapes[source])
        if items[0][0].part is None:
            g = items[0][1]
            out[source] = float_from_array(np.asarray(g.data).reshape(-1), g.tensor_type.name, shape)
            continue
        dim = items[0][0].part_dim
        sub = shape[:dim] + shape[dim + 1:]
        halves = [float_from_array(np.asarray(g.data).reshape(-1), g.tensor_type.name, sub)
                  for _, g in sorted(items, key=lambda x: x[0].part)]
        out[source] = torch.stack(halves, dim=dim)
    return out
