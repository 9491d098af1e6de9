"""Pure experiment rules: the holdout draw and the choice among an offer's variants.

The holdout is a keyed hash of (campaign, shopper): the same shopper is always in the same group
of a campaign, and the draw uses no random state, so it is independent of the variant choice.
Variants are chosen by fixed weights or by Thompson sampling on Beta posteriors.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Selection(StrEnum):
    FIXED = "fixed"
    ADAPTIVE = "adaptive"


def holdout_secret(secret_key: str) -> bytes:
    """The holdout's own key, derived from the engine's secret (never the secret itself)."""
    return hmac.new(secret_key.encode(), b"offer-engine:holdout", hashlib.sha256).digest()


def holdout_draw(secret: bytes, campaign_id: str, subject_id: str) -> float:
    """A number uniform in [0, 1) fixed for (campaign, shopper): HMAC-SHA256, first 8 bytes."""
    digest = hmac.new(secret, f"{campaign_id}\x1f{subject_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_held_out(secret: bytes, campaign_id: str, subject_id: str, share: float) -> bool:
    return holdout_draw(secret, campaign_id, subject_id) < share


@dataclass(frozen=True, slots=True)
class VariantStats:
    """Outcomes of one variant's treated triggers whose visit window has closed (or that
    succeeded early): ``trials`` triggers, ``redeemed`` and ``visited`` of them."""

    offer_id: str
    weight: int
    trials: int = 0
    redeemed: int = 0
    visited: int = 0


def choose_fixed(variants: Sequence[VariantStats], rng: np.random.Generator) -> str:
    weights = np.array([max(v.weight, 0) for v in variants], dtype=float)
    if weights.sum() <= 0:
        weights = np.ones(len(variants))
    index = int(rng.choice(len(variants), p=weights / weights.sum()))
    return variants[index].offer_id


def choose_thompson(variants: Sequence[VariantStats], rng: np.random.Generator) -> str:
    """One draw from each variant's Beta(1 + successes, 1 + failures) posterior for redemption
    and for visit; the variant with the highest sum of the two draws wins."""
    best, best_score = variants[0].offer_id, -1.0
    for v in variants:
        redeem = rng.beta(1 + v.redeemed, 1 + max(v.trials - v.redeemed, 0))
        visit = rng.beta(1 + v.visited, 1 + max(v.trials - v.visited, 0))
        score = float(redeem + visit)
        if score > best_score:
            best, best_score = v.offer_id, score
    return best


def choose_variant(
    selection: str, variants: Sequence[VariantStats], rng: np.random.Generator
) -> str:
    if not variants:
        raise ValueError("a campaign needs at least one active variant")
    if len(variants) == 1:
        return variants[0].offer_id
    if selection == Selection.ADAPTIVE:
        return choose_thompson(variants, rng)
    return choose_fixed(variants, rng)
