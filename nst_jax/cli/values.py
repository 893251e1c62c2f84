"""How the ``nst-jax`` command reads option values: numbers, lists, layer names, tiles.

Each function takes the option's text and returns its value, or raises
``argparse.ArgumentTypeError`` with a one-line reason (argparse names the option).
"""

from __future__ import annotations

import argparse
import math

from nst_jax.config import OPTIMIZER_ALIASES
from nst_jax.core import style_terms
from nst_jax.core.fields import MAX_COUNT
from nst_jax.errors import shown
from nst_jax.video.settings import check_offsets


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    if value > MAX_COUNT:  # larger ones overflow the C integers of XLA and NumPy
        raise argparse.ArgumentTypeError(f"expected at most {MAX_COUNT}, got {shown(value)}")
    return value


def number(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def non_negative(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive(text: str) -> float:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def numbers(text: str) -> tuple[float, ...]:
    """Comma-separated numbers >= 0."""
    return tuple(non_negative(part) for part in text.split(","))


def sweep(text: str) -> float | tuple[float, ...]:
    """One number >= 0, or a comma-separated list of them (a sweep)."""
    values = numbers(text)
    return values[0] if len(values) == 1 else values


def layers(text: str) -> tuple[str, ...]:
    """Comma-separated layer names; the settings check them against ``--extractor``'s."""
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"an empty layer name in {text!r}")
    return names


def word(text: str) -> str:
    """A name among choices, spaces around it ignored (as numbers' are)."""
    return text.strip()


def optimizer_name(text: str) -> str:
    return OPTIMIZER_ALIASES.get(text.strip(), text.strip())


def style_loss_names(text: str) -> tuple[str, ...]:
    """One style loss, or comma-separated ones: one result each (a program each)."""
    names = tuple(part.strip() for part in text.split(","))
    known = style_terms.names()  # built-in and registered (a --plugin's, say)
    for name in names:
        if name not in known:
            raise argparse.ArgumentTypeError(
                f"unknown style loss {name!r}; known: {', '.join(known)}"
            )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a style loss is named twice in {text!r}")
    return names


def shard(text: str) -> tuple[int, int]:
    """``I/N``: part I (from 0) of N."""
    try:
        index, count = (int(part) for part in text.strip().split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected I/N (part I of N, from 0), got {text!r}"
        ) from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"part {index} of {count} does not exist (0 to {count - 1})"
        )
    return index, count


def size(text: str) -> tuple[int, int]:
    """``WxH`` in pixels, as ``(height, width)`` (the library's order)."""
    try:
        width, height = (positive_int(part) for part in text.strip().lower().split("x"))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected WxH in pixels, got {text!r}") from None
    return height, width


def flow_offsets(text: str) -> tuple[int, ...]:
    """Comma-separated distinct positive integers holding 1."""
    try:
        return check_offsets([int(part) for part in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected distinct positive integers holding 1 (such as 1,2,4), got {text!r}"
        ) from None


def tile(text: str) -> int | str:
    """``auto``, ``off`` or a positive number of pixels (spaces around it ignored, as in
    every option value)."""
    text = text.strip()
    return text if text in ("auto", "off") else positive_int(text)


def pixel_limit(text: str) -> int | None:
    """``--max-pixels``: a positive integer, or ``off`` (no limit: ``None``)."""
    if text == "off":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(str(e).replace("integer,", "integer or off,")) from None
