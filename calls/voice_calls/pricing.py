"""What the model's tokens cost: one price table, read by the agent (metrics, the usage it
adds to the day's and month's totals) and the token server (budgets).

Prices are US dollars per million tokens, by direction (`input`, `output`) and modality
(`audio`, `text`), as in Gemini Live's `usageMetadata` (`promptTokensDetails`,
`responseTokensDetails`). The defaults are Google's published prices for the Live API's
native-audio Gemini 2.5 Flash model; set `MODEL_PRICES_USD_PER_MTOK` for your model and
contract, e.g. `input_audio=3.00,input_text=0.50,output_audio=12.00,output_text=2.00`.
"""

from __future__ import annotations

from collections.abc import Mapping

#: (direction, modality) -> US dollars per million tokens.
DEFAULT_PRICES_USD_PER_MTOK: Mapping[tuple[str, str], float] = {
    ("input", "audio"): 3.00,
    ("input", "text"): 0.50,
    ("output", "audio"): 12.00,
    ("output", "text"): 2.00,
}
DIRECTIONS = ("input", "output")
MODALITIES = ("audio", "text")


def parse_prices(spec: str) -> dict[tuple[str, str], float]:
    """The price table from `direction_modality=price` pairs, comma-separated; pairs not
    given keep their default; empty: the defaults.

    Raises:
        ValueError: an unknown direction or modality, or a price that is not a number >= 0.
    """
    prices = dict(DEFAULT_PRICES_USD_PER_MTOK)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, value = item.partition("=")
        direction, _, modality = key.strip().partition("_")
        if direction not in DIRECTIONS or modality not in MODALITIES:
            raise ValueError(f"{key.strip()!r}: expected one of input_audio, input_text, output_audio, output_text")
        try:
            price = float(value)
        except ValueError:
            raise ValueError(f"{key.strip()}: {value.strip()!r} is not a price in USD per million tokens") from None
        if price < 0:
            raise ValueError(f"{key.strip()}: a price cannot be negative")
        prices[(direction, modality)] = price
    return prices


def cost_usd(tokens: Mapping[tuple[str, str], int], prices: Mapping[tuple[str, str], float]) -> float:
    """The cost of `tokens` ((direction, modality) -> count) at `prices`, in US dollars."""
    return sum(count * prices.get(key, 0.0) / 1_000_000 for key, count in tokens.items())
