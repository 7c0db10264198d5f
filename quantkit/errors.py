"""The errors quantkit raises on purpose. The CLI turns each into one line and exit code 2.

Every message names the file, tensor or option at fault and what to do; callers and tests catch the
type, never the text. The tree is small on purpose: a subclass exists where some caller treats it
differently (falls back, retries, reports it as a verdict).

    QuantkitError
    ├── UsageError        a command-line option or argument is wrong ("--bits 5: supported ...")
    ├── CheckpointError   the source model: missing/corrupt shards, unknown architecture, bad config
    ├── ProfileError      a profile file or rule ("profiles/x.yaml rule 2: unknown role 'foo'")
    ├── CalibrationError  calibration samples or a calibration directory
    ├── PlanRefused       a plan a runtime or the output format cannot take (mixed bits in a fused
    │                     group, a scheme no GGUF type holds, a quantized router)
    ├── VariantCorrupt    a variant's files do not match its quantkit.json, or it is not a variant
    ├── OutputError       --out exists, lies inside the source, or cannot be written
    └── HubError          a push or a Hub read failed (token, HTTP status, network)
"""


class QuantkitError(Exception):
    """A user-facing error: the message names the file or option and what to do."""


class UsageError(QuantkitError):
    """A command-line option or argument is invalid; the message names the option."""


class CheckpointError(QuantkitError):
    """The source checkpoint cannot be read as the model it claims to be (shards, index, config)."""


class ProfileError(QuantkitError):
    """A profile file is invalid; the message names the file and the rule."""


class CalibrationError(QuantkitError):
    """Calibration samples or a calibration directory are invalid or do not fit the model."""


class PlanRefused(QuantkitError):
    """The plan would write a variant that its format or a target runtime cannot take."""


class VariantCorrupt(QuantkitError):
    """A variant directory is not a quantkit variant, or its files do not match its manifest."""


class OutputError(QuantkitError):
    """The output location is unusable: it exists, lies inside the source, or cannot be written."""


class HubError(QuantkitError):
    """A Hugging Face Hub operation failed; the message names the repo and the HTTP status or cause."""


__all__ = ["CalibrationError", "CheckpointError", "HubError", "OutputError", "PlanRefused", "ProfileError",
           "QuantkitError", "UsageError", "VariantCorrupt"]
