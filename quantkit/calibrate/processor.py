"""A model's processor (or a text model's tokenizer), loaded without ever running the checkpoint's
own code, and its chat template.

transformers asks "Do you wish to run the custom code?" when a processor exists only as `auto_map`
code (the real ERNIE-4.5-VL repos ship theirs that way); answering yes, or `yes |`, runs the
checkpoint's module. quantkit always passes `trust_remote_code=False` and says in one line what to do
instead. A model without a chat template (base `-PT` checkpoints, many text models) is calibrated on
its samples as plain text, or through `--chat-template FILE`; the calibration record says which.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import AutoProcessor, AutoTokenizer

from ..errors import CalibrationError, CheckpointError

REMOTE_CODE_HINT = ("quantkit never runs a checkpoint's own code; it needs the processor classes that "
                    "transformers itself provides: use a checkpoint in transformers' native layout (e.g. the -PT "
                    "repos), or replace the auto_map entries of its processor/tokenizer configs with a "
                    "transformers class")


def load_processor(model_dir: str | Path, *, vision: bool):
    """AutoProcessor (vision-language) or AutoTokenizer (text), with trust_remote_code=False."""
    cls = AutoProcessor if vision else AutoTokenizer
    try:
        return cls.from_pretrained(str(model_dir), trust_remote_code=False)
    except ValueError as e:
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise CheckpointError(f"{model_dir}: its {'processor' if vision else 'tokenizer'} is remote code; "
                                  f"{REMOTE_CODE_HINT}") from None
        raise CheckpointError(f"{model_dir}: cannot load its {'processor' if vision else 'tokenizer'} "
                              f"({str(e).splitlines()[0]})") from None
    except (OSError, TypeError, KeyError) as e:
        raise CheckpointError(f"{model_dir}: cannot load its {'processor' if vision else 'tokenizer'} "
                              f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def use_chat_template(processor, chat_template: str | Path | None) -> dict:
    """Install `--chat-template FILE` if given; return how samples will be rendered (for the record):
    {"source": "model" | "file" | "none", "sha256": ..., "path": ...}."""
    if chat_template is not None:
        path = Path(chat_template)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CalibrationError(f"--chat-template {path}: cannot read it ({e})") from None
        if not text.strip():
            raise CalibrationError(f"--chat-template {path}: the file is empty")
        processor.chat_template = text
        tok = getattr(processor, "tokenizer", None)
        if tok is not None:
            tok.chat_template = text
        return {"source": "file", "path": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    template = getattr(processor, "chat_template", None)
    if not template:
        return {"source": "none", "note": "no chat template: samples rendered as plain text (turns joined by "
                                          "blank lines); pass --chat-template FILE to use one"}
    return {"source": "model", "sha256": hashlib.sha256(str(template).encode()).hexdigest()}
