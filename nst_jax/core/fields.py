"""Settings as documented dataclass fields, and the key of the program they compile to.

Every setting of the core's configs (:class:`nst_jax.core.objective.ObjectiveConfig`,
:class:`nst_jax.core.optim.OptimizerConfig`) and of the drivers' settings is a dataclass
field made by :func:`setting`: its metadata documents it (the ``nst-jax`` options are
generated from it, help and default included) and says whether it shapes a compiled
program (``static``). :func:`program_key` derives a cache key from that metadata: two
configs that differ only in values the program takes as arguments (term weights travel in
the targets, the learning rate in the optimiser's state) compile to one program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

import numpy as np

C = TypeVar("C")


def setting(
    default: Any,
    help: str,  # noqa: A002 (argparse's word: the option's help)
    kind: str | None = None,
    choices: tuple[str, ...] | None = None,
    static: bool = False,
    flag: str | None = None,
) -> Any:
    """A settings field whose metadata documents it.

    Args:
      default: the field's one default (the command's option shows it).
      help: what it does, one phrase.
      kind: how the command parses it beyond its type: ``"layers"`` (comma-separated
        names), ``"floats"`` (comma-separated numbers), ``"sweep"`` (a number, or several:
        one result each), ``"positive"`` (a number > 0), ``"tile"``, ``"per_style"`` (no
        option of its own: set by the options that follow each ``--style``), ``"size"``
        (``WxH``), ``"offsets"``, or ``None``: by its type.
      choices: the values it may take.
      static: whether it shapes a compiled program (else the program takes its value as an
        argument, or it only changes the loop around the program).
      flag: the command's option, when not ``--`` and the field's name.
    """
    metadata = {"help": help, "kind": kind, "choices": choices, "static": static, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


def program_key(config: C) -> C:
    """``config`` with every field that is not ``static`` at its default: equal for configs
    that compile to the same program, and hashable (configs are frozen)."""
    changes = {
        field.name: field.default
        for field in dataclasses.fields(config)
        if not field.metadata.get("static", False) and field.init
    }
    return dataclasses.replace(config, **changes)


def part_of(config: Any, cls: type[C]) -> C:
    """The ``cls`` config made of ``config``'s values of ``cls``'s fields (a
    :class:`nst_jax.StyleConfig` holds every field of the core's configs)."""
    if type(config) is cls:
        return config
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init})


def field_help(cls: type, name: str) -> str:
    """The documentation of field ``name`` of the settings class ``cls``."""
    return cls.__dataclass_fields__[name].metadata["help"]


def refuse_traced(config: Any) -> None:
    """Raise ``TypeError`` when a field holds a traced value: configs are static under
    ``jax.jit``; a value to differentiate or sweep belongs in the targets."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(type(v).__name__.endswith("Tracer") or _is_tracer(v) for v in values):
            raise TypeError(
                f"{field.name} is being traced: a config is static under jax.jit; put a "
                'value to differentiate or sweep in targets["weights"] (see make_targets)'
            )


def _is_tracer(value: Any) -> bool:
    import jax

    return isinstance(value, jax.core.Tracer)


def check_finite(name: str, value: Any, low: float = 0.0, strict: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` (a number, or a tuple of them) is finite and
    at least ``low`` (above it with ``strict``)."""
    for v in value if isinstance(value, tuple) else (value,):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < low or (strict and v == low):
            relation = ">" if strict else ">="
            raise ValueError(f"{name} must be a finite number {relation} {low:g}, got {v!r}")


def check_config(config: Any, cls: type, name: str = "config") -> None:
    """Raise ``TypeError`` unless ``config`` is a ``cls`` (a ``nst_jax.StyleConfig`` is
    every core config): a dict or ``None`` would fail later on a missing attribute."""
    if not isinstance(config, cls):
        kind = type(config).__name__
        raise TypeError(f"{name} must be an {cls.__name__} or a nst_jax.StyleConfig, got {kind}")


def check_flags(config: Any) -> None:
    """Raise ``ValueError`` unless every setting whose default is a bool holds a bool
    (NumPy's included): ``"no"`` or ``0`` would be read as a truth value, silently."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(field.default, bool) and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{field.name} must be True or False, got {value!r}")


def check_sweep(name: str, value: Any) -> None:
    """Raise ``ValueError`` for an empty sweep (a list of no values), which would run no
    image rather than one."""
    if isinstance(value, (tuple, list)) and not value:
        raise ValueError(f"{name}: an empty list; give one value or several (a sweep)")


MAX_COUNT = 2**31 - 1


def check_count(name: str, value: Any, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1 (or ``None`` when
    ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value > MAX_COUNT:  # larger counts overflow the C integers of XLA and NumPy
        raise ValueError(f"{name} must be at most {MAX_COUNT}, got {value}")


def as_count(name: str, value: Any, optional: bool = False) -> int | None:
    """A function argument that counts (not a setting stored in a config, which
    :func:`check_count` keeps a plain ``int`` for its JSON record): ``value`` as an ``int``,
    a NumPy integer taken too.

    Raises:
      ValueError: as :func:`check_count`.
    """
    if isinstance(value, np.integer):
        value = int(value)
    check_count(name, value, optional)
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
