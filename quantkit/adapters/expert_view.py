"""A checkpoint whose experts are stored fused (one 3-D tensor per layer and projection group) seen as
one 2-D [out, in] weight per expert and projection: the hook that lets the core, which plans, calibrates,
quantizes and writes 2-D tensors, take such checkpoints unchanged.

The family's adapter says which stored tensors are fused and how to cut them (`Piece`s: the per-expert
name, the stored tensor, the expert index, whether the stored matrix is [in, out] and needs a transpose,
and the rows of the [out, in] matrix that belong to the projection: gate = the first I rows of a fused
gate_up, up = the next I). Reading a piece reads only that expert's slice of the stored tensor
(safetensors slicing), or, in `read_many`, each stored tensor once. Everything else is the wrapped
checkpoint's. A variant written from the view holds per-expert tensors (what vLLM's and GPTQ loaders
read); `Adapter.loadable_state` fuses them back for transformers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable


@dataclass(frozen=True)
class Piece:
    name: str  # the per-expert name the view shows
    source: str  # the stored fused tensor
    expert: int
    transpose: bool  # the stored expert matrix is [in, out]
    rows: tuple[int, int] | None  # [start, stop) of the [out, in] matrix; None: all
    shape: tuple[int, int]  # [out, in]

    def cut(self, expert_matrix):
        """This piece of one expert's stored 2-D matrix, as a contiguous [out, in] tensor."""
        t = expert_matrix.T if self.transpose else expert_matrix
        if self.rows is not None:
            t = t[self.rows[0]:self.rows[1]]
        return t.contiguous()


class ExpertView:
    """`ckpt` with every fused tensor `split(info)` returns pieces for replaced by those pieces."""

    def __init__(self, ckpt, split: Callable[[object], list[Piece] | None]):
        self.ckpt = ckpt
        self._pieces: dict[str, Piece] = {}
        self._infos: dict[str, object] = {}
        for info in ckpt.infos():
            pieces = split(info)
            if not pieces:
                self._infos[info.name] = info
                continue
            for p in pieces:
                self._pieces[p.name] = p
                self._infos[p.name] = replace(info, name=p.name, shape=p.shape)

    def __getattr__(self, attr):  # path, config, source, revision, side_files, ...
        return getattr(self.ckpt, attr)

    @property
    def fused_sources(self) -> list[str]:
        return sorted({p.source for p in self._pieces.values()})

    def names(self) -> list[str]:
        return sorted(self._infos)

    def info(self, name: str):
        if name in self._infos:
            return self._infos[name]
        return self.ckpt.info(name)  # raises the checkpoint's own error

    def infos(self) -> list:
        return [self._infos[n] for n in self.names()]

    def read(self, name: str):
        p = self._pieces.get(name)
        if p is None:
            return self.ckpt.read(name)
        from safetensors import safe_open

        with safe_open(self.ckpt.path / self.ckpt.info(p.source).shard, framework="pt") as f:
            return p.cut(f.get_slice(p.source)[p.expert])

    def read_many(self, names: list[str]) -> dict:
        plain = [n for n in names if n not in self._pieces]
        out = self.ckpt.read_many(plain) if plain else {}
        by_source: dict[str, list[Piece]] = {}
        for n in names:
            if n in self._pieces:
                by_source.setdefault(self._pieces[n].source, []).append(self._pieces[n])
        for source, pieces in by_source.items():
            fused = self.ckpt.read(source)  # each stored tensor read once
            for p in pieces:
                out[p.name] = p.cut(fused[p.expert])
            del fused
        return out


def fused_pieces(prefix: str, source: str, shape: tuple, hidden: int, *, stored_in_out: bool) -> list[Piece]:
    """The pieces of one layer's fused `...experts.gate_up_proj` ([E, H, 2I] stored [in, out], or
    transformers' in-memory [E, 2I, H]) or `...experts.down_proj` ([E, I, H] / [E, H, I]) as
    `{prefix}{k}.{gate,up,down}_proj.weight`."""
    n_exp = shape[0]
    if source.endswith("gate_up_proj"):
        width = (shape[2] if stored_in_out else shape[1]) // 2
        return [Piece(f"{prefix}{k}.{proj}_proj.weight", source, k, stored_in_out, (i * width, (i + 1) * width),
                      (width, hidden)) for k in range(n_exp) for i, proj in enumerate(("gate", "up"))]
    width = shape[1] if stored_in_out else shape[2]
    return [Piece(f"{prefix}{k}.down_proj.weight", source, k, stored_in_out, None, (hidden, width))
            for k in range(n_exp)]
