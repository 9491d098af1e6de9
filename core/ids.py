"""Identifiers: opaque, prefixed, unguessable."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """``prefix_`` followed by 128 random bits in hex, e.g. ``st_4f0c...``."""
    return f"{prefix}_{secrets.token_hex(16)}"
