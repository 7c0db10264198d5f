"""The protocol every output format implements, and the registry the core asks.

A format (one package under `quantkit/formats/`) says how a planned tensor is typed and sized, how
weights are solved and emitted, how the variant directory is written, read back, verified, measured
and described on its card. The core (plan, profiles, quantize, api) only ever calls these methods on
the object `get_format(name)` returns; it never names a format. `quantkit/formats/__init__.py`
registers the shipped formats: adding one is a package there plus one `register(...)` line.

Method defaults here are the behaviour a format gets unless it overrides them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import PlanRefused, UsageError, VariantCorrupt
from .manifest import read_manifest

if TYPE_CHECKING:  # types only: the core modules below import this one
    from .adapters import Adapter
    from .checkpoint import Checkpoint, TensorInfo
    from .plan import Plan, TensorPlan
    from .roles import Role
    from .scheme import QuantScheme

# `add(tensors)`: what a producer calls with output tensors, in any grouping; `produce(add, progress)`
# runs them, checkpointing through `progress` (a quantkit.runstate.RunProgress), and returns what the
# manifest should record about the run (fallbacks, solver figures) or None.
Add = Callable[[dict], None]
Produce = Callable[[Add, object], "dict | None"]
Log = Callable[[str], None]


class Format:
    """Base of every output format. `name` is what `--format` and a profile's `format:` say."""

    name: str = ""
    description: str = ""  # one line for --help and errors
    default_format: bool = False  # the format `--bits N` writes unless told otherwise
    profile_suffix: str = ""  # `--bits N` picks the family's `<profile><suffix>-wN` profile
    rule_keys: frozenset[str] = frozenset()  # extra keys this format allows in profile rules
    runtimes: tuple[str, ...] = ()  # what `verify --runtime all` checks for this format

    # -- profiles and plans --------------------------------------------------------------------
    def rule_fields(self, raw: dict, where: str) -> dict:
        """A profile rule with this format's own keys resolved into bits / group_size / sym."""
        return raw

    def check_adapter(self, adapter: "Adapter", ckpt: "Checkpoint | None" = None) -> None:
        """Refuse (PlanRefused) a model family this format cannot describe."""

    def check_source(self, ckpt: "Checkpoint", adapter: "Adapter") -> None:
        """Refuse a source this format cannot be written from, before any work."""
        self.check_adapter(adapter, ckpt)

    def quantizable(self, role: "Role", shape: tuple[int, ...], name: str) -> bool:
        """Whether a tensor of this role may carry a quantized scheme (linear weights by default)."""
        return role.is_linear and name.endswith(".weight") and len(shape) == 2

    def plan_tensor(self, info: "TensorInfo", role: "Role", scheme: "QuantScheme | None",
                    adapter: "Adapter") -> "TensorPlan":
        raise NotImplementedError

    def check_plan(self, entries: list["TensorPlan"], force: bool, notes: list[str]) -> None:
        """Refuse what this format (or its runtimes) cannot hold across tensors."""

    def refuse_scale_codes(self, scheme: "QuantScheme", tensor: str) -> None:
        """For a format whose groups carry fp16 scales: refuse, in one line naming the tensor, a scheme
        whose scales are quantized codes (`scale_bits`: GGUF's K-quants)."""
        if scheme.scale_bits is not None:
            raise PlanRefused(f"tensor {tensor}: {scheme.label} stores each group's scale as a {scheme.scale_bits}-bit "
                              "code (a GGUF K-quant); this format stores fp16 group scales: use --format gguf or "
                              "a scheme without scale codes")

    def candidate_schemes(self, base: "QuantScheme") -> tuple["QuantScheme", ...]:
        """The widths `--target-size` may choose for a tensor the profile gives `base` (quantkit.allocate),
        narrowest first: `base` at every bit width this format stores (group size, symmetry and method kept)."""
        from dataclasses import replace

        from .scheme import SUPPORTED_BITS
        return tuple(replace(base, bits=b) for b in sorted(SUPPORTED_BITS))

    # -- quantizing and writing ----------------------------------------------------------------
    def backend(self):
        """The `quantize.pipeline.Backend` that solves and emits weights for this format."""
        raise NotImplementedError

    def write_variant(self, ckpt: "Checkpoint", plan: "Plan", produce: Produce, out: Path, *,
                      overwrite: bool = False, max_shard_bytes: int = 2 * 2**30, extra: dict | None = None,
                      resume: bool = False, run: dict | None = None) -> Path:
        """Write the variant at `out` (quantkit.outdir: locked, atomic, resumable when `resume`;
        `run` describes the run for that check)."""
        raise NotImplementedError

    # -- reading back ----------------------------------------------------------------------------
    def dequantized_state_dict(self, variant: Path) -> dict:
        """Every tensor in the source's key names, quantized ones dequantized to fp32."""
        raise NotImplementedError

    def read_codes(self, variant: Path):
        """The variant's quantized modules as stored codes: an object with `modules` (module names),
        `kept` (tensor names), `scheme(module)`, `weight_shape(module)`, `stored_bytes(module)`,
        `read(module) -> QuantizedWeight` and `ckpt` (its tensors). Used to convert without requantizing."""
        raise VariantCorrupt(f"{variant}: a {self.name} variant cannot be read back as codes")

    def verify(self, variant: Path, runtimes: tuple[str, ...], source: str | Path | None, *, load: bool):
        """A `verdicts.VerifyReport` for the asked runtimes."""
        raise NotImplementedError

    def check_variant(self, variant: Path) -> None:
        """Refuse (VariantCorrupt) a directory that is not a variant of this format."""

    def serving_memory(self, variant: Path, config: dict, contexts: tuple[int, ...]) -> dict:
        """Memory figures of this format's own runtime (e.g. llama.cpp RAM), by context; {} if none."""
        return {}

    def real_model_memory(self, contexts: tuple[int, ...]) -> dict:
        """Predicted sizes of this format's shipped profiles for a real model, for `profile`'s report;
        {} if none."""
        return {}

    def file_bytes(self, variant: Path) -> dict:
        """{"total": bytes of the weights, "by_role": {label: bytes}, ...} from the variant's files."""
        raise NotImplementedError

    def convert(self, variant: Path, out: Path | None, *, overwrite: bool, log: Log) -> Path:
        """Write an existing variant of another format as this one (codes kept), or refuse."""
        raise UsageError(f"{variant}: converting a variant into {self.name} is not supported")

    # -- what the model card says ----------------------------------------------------------------
    def card(self, manifest: dict, info: "CardInput") -> "CardFacts":
        """This format's part of a variant's name and model card (quantkit.publish renders the rest)."""
        raise NotImplementedError


@dataclass(frozen=True)
class CardInput:
    """What the card room (quantkit.publish) knows about the variant whose card a format helps write.
    Only `scheme` is needed for the name; the rest fills the card's sentences."""

    scheme: "QuantScheme"  # the routed experts' headline scheme (publish.naming.expert_scheme)
    scheme_text: str = ""  # that scheme in words: `4-bit, group size 128, symmetric, RTN`
    algorithm: str = ""  # how the codes were chosen, in words: `GPTQ`, `round-to-nearest (RTN)`
    version: str = ""  # the quantkit version that made the variant
    name: str = ""  # the variant's full name (`<base>-<suffix>`)
    base_link: str = ""  # the base model as markdown (a Hub link, or the local source's id)
    model: str = ""  # what the reproduce lines' `quantkit quantize` reads
    model_revision: str = ""  # its ` --revision X` option, or ""
    tensor_bytes: int = 0  # bytes of the variant's tensors (sum of file_bytes' by_role)
    repo: str | None = None  # the repo the card's commands name (None: `ORG/NAME`)
    revision: str | None = None  # the branch they name
    vision: bool = False  # the model family takes images (its adapter's modalities)
    flavour: str | None = None  # the family's config flavour on disk, where it has several (adapter.flavour)
    model_type: str | None = None  # config.json's model_type
    remote_code: bool = False  # config.json has `auto_map` (remote code)


@dataclass
class CardFacts:
    """What a format contributes to a variant's name and model card (plain data: the card room
    renders it around its own sections)."""

    name_suffix: str  # after `<base>-`: `GPTQ-Int4-g128`, `GGUF-Q4_0` (the card room adds `-rtn`)
    label: str  # the format in a title: "<base> <label> variants"
    tags: list[str]  # Hub tags of the format, after `moe`, `mixture-of-experts`
    library_name: str  # the card metadata's library_name
    made_as: str  # the opening sentence: what was quantized, by what, written how
    format_line: str  # the `- Format: ...` bullet
    runtime_lines: list[str]  # the Runtimes section before the verdicts table
    unverified_note: str = ""  # appended to "No runtime check is recorded ... (`quantkit verify` was not run)"
    storage_types: bool = False  # the Bits column names each role's stored types (file_bytes rows' "types")
    reproduce_lines: list[str] | None = None  # lines that replace `quantkit quantize ...` (e.g. a conversion)
    index_lines: list[str] = field(default_factory=list)  # commands under the index card's download line


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if not fmt.name or fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r}: empty or registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    return tuple(_FORMATS)


def formats() -> tuple[Format, ...]:
    return tuple(_FORMATS.values())


def default_format() -> Format:
    return next(f for f in _FORMATS.values() if f.default_format)


def get_format(name: str | None, option: str = "--format") -> Format:
    """The registered format `name` (None: the default one); UsageError naming `option` otherwise."""
    if name is None:
        return default_format()
    fmt = _FORMATS.get(name)
    if fmt is None:
        raise UsageError(f"{option} {name}: choose {' or '.join(_FORMATS)}")
    return fmt


def format_of_manifest(manifest: dict, where: str = "quantkit.json") -> Format:
    """The format a manifest records (the default format when it records none)."""
    name = manifest.get("format")
    if name is None:
        return default_format()
    fmt = _FORMATS.get(name)
    if fmt is None:
        raise VariantCorrupt(f"{where}: format {name!r}, which this quantkit does not know ({', '.join(_FORMATS)})")
    return fmt


def format_of_variant(variant: str | Path) -> Format:
    """The format of a variant directory, from its manifest (the default format when there is no
    readable manifest, e.g. a GPTQ checkpoint made elsewhere, or a source checkpoint)."""
    try:
        manifest = read_manifest(Path(variant))
    except VariantCorrupt:
        return default_format()
    return format_of_manifest(manifest, f"{variant}/quantkit.json")


def all_runtimes() -> tuple[str, ...]:
    out: list[str] = []
    for f in _FORMATS.values():
        out += [r for r in f.runtimes if r not in out]
    return tuple(out)


__all__ = ["Add", "CardFacts", "CardInput", "Format", "Log", "Produce", "all_runtimes", "default_format", "format_names",
           "formats",
           "format_of_manifest", "format_of_variant", "get_format", "register"]
