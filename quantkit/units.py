"""Byte sizes as people write them: `parse_size("2GB")` and `human_bytes(2_000_000_000)` ("2.00 GB").

Decimal units (1 GB = 10^9 bytes), as the Hub and disk vendors count; `GiB` is accepted on input
and read as binary (2^30).
"""
from __future__ import annotations

import re

from .errors import UsageError

_SIZE = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*([KMGT]?)(i?)(B?)\s*", re.I)


def parse_size(text: str | int | float, option: str = "--max-shard-size", *, positive: bool = True) -> int:
    """'2GB', '500MB', '24GiB', '200KB' or a byte count; a UsageError naming `option` otherwise.
    `positive` (default): a size under one byte (0, '0.1B', -5, '-2GB') is refused too."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise UsageError(f"{option} {text!r}: expected a size such as 2GB or 500MB")
    if isinstance(text, (int, float)):
        n = int(text)
    else:
        m = _SIZE.fullmatch(text)
        if not m:
            raise UsageError(f"{option} {text}: expected a size such as 2GB or 500MB")
        base = 1024 if m.group(3) else 1000
        power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[m.group(2).upper()]
        n = int(float(m.group(1)) * base ** power)
    if positive and n <= 0:
        raise UsageError(f"{option} {text}: must be a positive size such as 2GB or 500MB")
    return n


def human_bytes(n: float) -> str:
    """`512 B`, `1.50 KB`, `2.00 GB` (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)
