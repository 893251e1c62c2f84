"""A result's stored settings replayed as untrusted data (``nst-jax stylize --from PNG``).

A PNG written by nst-jax carries a JSON record of its run. Anyone can write such a chunk, so
``--from`` reads it as data, never as a command:

- the record must be a JSON object of known keys; its ``config`` must be a complete, valid
  set of :class:`~nst_jax.StyleConfig` fields;
- only settings are replayed (every ``StyleConfig`` field and ``--max-dim``), and, unless the
  command line gives them, the content and style files to read;
- a record made with plug-ins (``--plugin``) replays only when the same files (by SHA-256)
  are given again: the record names them, it never loads code;
- never a subcommand, an output path, a weights path, another ``--from``, or any option
  outside that list: the stored command is not run, and what it held besides settings is
  named on stderr as not replayed;
- options given on the command line override the stored ones; ``-o`` is required.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

from nst_jax.config import StyleConfig
from nst_jax.core.fields import check_count
from nst_jax.errors import InputError, shown
from nst_jax.files import image
from nst_jax.session import plugins

RECORD_KEYS = {
    "command",
    "config",
    "max_dim",
    "weights_md5",
    "style",
    "content",
    "setting",
    "sha256",
    "mask",
    "mask_labels",
    "style_mask",
    "plugins",
}
# The longest file name a record may hold (Linux's PATH_MAX and NAME_MAX, in bytes).
PATH_BYTES, NAME_BYTES = 4096, 255
FIELDS = {field.name: field for field in dataclasses.fields(StyleConfig)}
# Options of a stored command that --from replays; everything else is reported as ignored.
REPLAYED_OPTIONS = {"--" + name.replace("_", "-") for name in FIELDS} | {
    "--max-dim",
    "--preset",
    "--style",
    "-s",
    "--per-style-weight",  # replayed as the stored style_weights
    "--mask",
    "--mask-labels",
    "--style-mask",
}


def _stored_config(config: Any, path: Path) -> StyleConfig:
    # A field added since the record was written takes its default (the value that run had:
    # a new field's default is the behaviour before it); an unknown field is refused.
    if not isinstance(config, dict) or not set(config) <= set(FIELDS):
        raise InputError(f"{path}: damaged provenance: its settings are not StyleConfig's fields")
    missing = [name for name in FIELDS if name not in config and _no_default(FIELDS[name])]
    if missing:
        raise InputError(f"{path}: damaged provenance: settings lack {', '.join(missing)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        return StyleConfig(**values)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: damaged provenance: invalid settings ({e})") from None


def _no_default(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _strings(value: Any, key: str, path: Path, empty: bool = False) -> list[str]:
    """A record's file name(s), checked: strings a file system could hold."""
    items = value if isinstance(value, list) else [value]
    if (not items and not empty) or not all(_file_name(item) for item in items):
        raise InputError(f"{path}: damaged provenance: {key} is not a file name")
    return items


def _file_name(item: Any) -> bool:
    if not isinstance(item, str) or not item or "\0" in item:
        return False
    encoded = os.fsencode(item)
    return len(encoded) <= PATH_BYTES and all(len(p) <= NAME_BYTES for p in encoded.split(b"/"))


def read_record(path: str | Path) -> tuple[StyleConfig, dict[str, Any]]:
    """The stored settings and the checked record of a PNG written by nst-jax.

    Raises:
      InputError: no record, not JSON, unknown keys, or ill-typed fields (one line).
    """
    path = Path(path)
    record = image.read_provenance(path)
    unknown = sorted(set(record) - RECORD_KEYS)
    if unknown:
        raise InputError(f"{path}: damaged provenance: unknown key(s) {', '.join(unknown)}")
    # Before the settings: their style loss may be a plug-in's, named only once it is loaded.
    plugins.check_records(record.get("plugins"), plugins.loaded(), str(path))
    config = _stored_config(record.get("config"), path)
    max_dim = record.get("max_dim")
    try:
        check_count("max_dim", max_dim, optional=True)
    except ValueError:
        raise InputError(f"{path}: damaged provenance: max_dim {shown(repr(max_dim))}") from None
    checked = {"max_dim": max_dim}
    if "content" in record:
        checked["content"] = _strings(record["content"], "content", path)
    if "style" in record:
        checked["style"] = _strings(record["style"], "style", path)
    for key in ("mask", "mask_labels"):
        if record.get(key):
            checked[key] = _strings(record[key], key, path)
    if record.get("style_mask"):
        masks = record["style_mask"]
        named = [m for m in masks if m is not None] if isinstance(masks, list) else [masks]
        _strings(named, "style_mask", path, empty=True)
        checked["style_mask"] = masks
    command = record.get("command", [])
    checked["command"] = command if isinstance(command, list) else []
    return config, checked


def _not_replayed(command: list) -> list[str]:
    """What a stored command held besides replayable settings (for the user to see)."""
    words = [str(word) for word in command]
    ignored = [f"subcommand {shown(repr(words[0]))}"] if words and words[0] != "stylize" else []
    # A dict keeps the order: a record is untrusted, and its command may hold 10**6 words.
    options = dict.fromkeys(word.split("=")[0] for word in words if word.startswith("-"))
    return ignored + [option for option in options if option not in REPLAYED_OPTIONS]


class Replay(NamedTuple):
    """What a result's record replays: its settings and, for the inputs the command line
    does not give, its files; ``ignored`` names what the record held that is not replayed.
    """

    config: StyleConfig
    max_dim: int | None
    contents: tuple[str, ...]
    styles: tuple[str, ...]
    masks: tuple[str, ...] | None
    mask_labels: str | None
    style_masks: tuple[str | None, ...] | None
    ignored: tuple[str, ...]


def replay(path: str | Path) -> Replay:
    """The settings and inputs a PNG written by nst-jax replays (module docstring).

    Raises:
      InputError: no record, or a damaged one (one line).
    """
    config, record = read_record(path)
    masks = record.get("style_mask")
    return Replay(
        config,
        record["max_dim"],
        tuple(record.get("content", ())),
        tuple(record.get("style", ())),
        tuple(record["mask"]) if record.get("mask") else None,
        (record.get("mask_labels") or [None])[0],
        tuple(masks) if isinstance(masks, list) else None,
        tuple(_not_replayed(record["command"])),
    )
