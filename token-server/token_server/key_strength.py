"""How strong a secret or API key looks: estimated entropy, and the bar the settings set."""

from __future__ import annotations

import math
from collections import Counter

#: Least entropy a secret or key must show, estimated from its characters' frequencies
#: (bits): 32 random hex digits show about 90 or more, `openssl rand -base64 36` about 230;
#: one letter repeated shows 0, two alternating 1 bit per character.
MIN_KEY_ENTROPY_BITS = 80


def estimated_entropy_bits(secret: str) -> float:
    """Shannon entropy of `secret`'s character frequencies times its length (bits): an
    upper bound on what a random-looking value holds, and near 0 for a repeated letter."""
    counts = Counter(secret)
    total = len(secret)
    return -total * sum(n / total * math.log2(n / total) for n in counts.values()) if total else 0.0


def is_weak(secret: str) -> bool:
    """Whether `secret` shows less than `MIN_KEY_ENTROPY_BITS` of entropy."""
    return estimated_entropy_bits(secret) < MIN_KEY_ENTROPY_BITS
