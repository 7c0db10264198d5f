"""Publishing a variant: its name, its model card, packaging it, pushing it to the Hub, and the
pipeline `make publish` runs. One job per module:

- `naming.py`         the variant's name (`<base>-<format suffix>[-rtn]`), Hub ids, `--repo`/`--revision`
- `card.py`           the model card (metadata + body) and the branch layout's index card on `main`
- `card_sections.py`  the card's sections every format shares (roles, calibration, runtimes, ...)
- `tables.py`         the tables a card embeds: a `quantkit profile` tradeoff, `quantkit verify` verdicts
- `packaging.py`      `quantkit package`: checksums checked, card written, both recorded in quantkit.json
- `pushing.py`        `quantkit push`: one atomic commit per variant (errors: hub_errors.py)
- `plan.py`           publish/variants.yaml -> the commands of `make publish` / the CI matrix
                      (`python -m quantkit.publish.plan commands|matrix CONFIG`; not imported here)

What a format says on the card comes from `Format.card` (quantkit/formats/*/card.py); checksums and
the `verify-files` check from quantkit.manifest.
"""
from ..manifest import FilesReport, checked_manifest, verify_files
from .card import CARD, index_entry, read_card_metadata, render_card, render_index_card
from .naming import VariantName, expert_scheme, resolve_target, variant_name
from .packaging import PackageOptions, PackageResult, collect_verdicts, package, packaged_card
from .pushing import PushOptions, PushPlan, PushResult, plan_push, push, update_index
from .tables import read_report

__all__ = ["CARD", "FilesReport", "PackageOptions", "PackageResult", "PushOptions", "PushPlan", "PushResult",
           "VariantName", "checked_manifest", "collect_verdicts", "expert_scheme", "index_entry", "package",
           "packaged_card", "plan_push", "push", "read_card_metadata", "read_report", "render_card",
           "render_index_card", "resolve_target", "update_index", "variant_name", "verify_files"]
