"""Seeds derived per category, so results never depend on the order categories are processed in."""

from __future__ import annotations

import hashlib


def category_seed(seed: int, category: str) -> int:
    """A 63-bit seed from the global ``seed`` and the category name."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{category}".encode()).digest()[:8], "little") >> 1
