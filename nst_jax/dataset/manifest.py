"""A job's manifest in its output folder: the plan, and what each shard has done.

``OUT/.nst-jax/plan.json`` holds the plan (settings, their hash, every item with its input,
output, styles, seed and batch), written once, atomically, before any pixel work. Each shard
appends one JSON line per finished item to ``OUT/.nst-jax/done-I-of-N.jsonl``: ``done``
with the output's SHA-256 and size, or ``failed`` with the reason. A line cut short by a
kill is ignored. An item counts as done only when its record says so and its output file
still has that hash: a continued job skips it, and redoes every batch not wholly done.

Everything read back is untrusted: a manifest that is not this format, or whose settings
differ from the job's, is refused in one line naming the setting.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nst_jax.dataset.plan import Batch, Item, Plan
from nst_jax.errors import InputError, shown
from nst_jax.files.atomic import atomic_write

FOLDER = ".nst-jax"
FORMAT = "nst_jax-dataset"
VERSION = 1


def folder(out: str | os.PathLike) -> Path:
    """The manifest's folder in a job's output folder."""
    return Path(out) / FOLDER


def plan_record(plan: Plan) -> dict[str, Any]:
    """The plan as the manifest stores it."""
    items = [
        [
            it.input,
            it.output,
            list(it.styles),
            [list(p) for p in it.setting],
            it.seed,
            it.batch,
            list(it.shape) if it.shape else None,
            it.reason,
        ]
        for it in plan.items
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "settings": plan.settings,
        "settings_hash": plan.settings_hash,
        "batches": [
            [list(b.shape), list(b.items), [list(p) for p in b.program], b.slots]
            for b in plan.batches
        ],
        "items": items,
    }


def write_plan(plan: Plan) -> Path:
    """Write the plan into the job's folder (before any pixel work)."""
    path = folder(plan.out) / "plan.json"
    text = json.dumps(plan_record(plan), separators=(",", ":"))
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_plan(out: str | os.PathLike) -> dict[str, Any] | None:
    """The stored plan record, or None when the folder holds none.

    Raises:
      InputError: a manifest that is not readable JSON of this format.
    """
    path = folder(out) / "plan.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{path}: unreadable job manifest ({type(e).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{path}: not an nst_jax job manifest")
    if record.get("version") != VERSION or not isinstance(record.get("settings"), dict):
        raise InputError(f"{path}: a job manifest of another version")
    return record


def load_plan(out: str | os.PathLike) -> Plan:
    """The plan a job's folder holds (what a worker on another machine reads).

    Raises:
      InputError: no manifest there, or a damaged one.
    """
    record = read_plan(out)
    if record is None:
        raise InputError(f"{folder(out)}: no job manifest")
    try:
        items = [
            Item(
                k,
                i,
                o,
                tuple(s),
                tuple(tuple(p) for p in setting),
                seed,
                b,
                tuple(shape) if shape else None,
                reason,
            )
            for k, (i, o, s, setting, seed, b, shape, reason) in enumerate(record["items"])
        ]
        batches = [
            Batch(k, tuple(shape), tuple(members), tuple(tuple(p) for p in program), int(slots))
            for k, (shape, members, program, slots) in enumerate(record["batches"])
        ]
    except (TypeError, ValueError) as e:
        raise InputError(f"{folder(out)}: damaged job manifest ({e})") from None
    styles = tuple(record["settings"]["styles"])
    return Plan(Path(out), record["settings"], styles, items, batches)


def check_same(plan: Plan, stored: dict[str, Any]) -> None:
    """Refuse to continue a stored job with other settings or inputs, naming the first
    difference (one line)."""
    path = folder(plan.out) / "plan.json"
    difference = _first_difference(stored["settings"], plan.settings)
    if difference is not None:
        was, now, name = difference
        raise InputError(
            f"{path}: this folder holds a job with {name}={was}, this one has {name}={now}; "
            "give another -o, or --force to replace it"
        )
    record = plan_record(plan)
    if stored.get("items") != record["items"] or stored.get("batches") != record["batches"]:
        raise InputError(
            f"{path}: this folder holds a job of other inputs; give another -o, or --force "
            "to replace it"
        )


def _first_difference(saved: Any, current: Any, name: str = "") -> tuple | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(key), current.get(key), key)
            if found is not None:
                return found
        return None
    return None if saved == current else (saved, current, name)


def records_path(out: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """The file a shard appends its items' records to."""
    return folder(out) / f"done-{shard[0]}-of-{shard[1]}.jsonl"


def append(out: str | os.PathLike, shard: tuple[int, int], records: Iterable[dict]) -> None:
    """Append records and put them on disk (``fsync``) before the job goes on."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    path = records_path(out, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def read_records(out: str | os.PathLike) -> dict[int, dict]:
    """Every shard's last record of each item (lines that are not whole records are
    skipped: a kill may cut the last one short)."""
    records: dict[int, dict] = {}
    for path in sorted(folder(out).glob("done-*-of-*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("item"), int):
                records[record["item"]] = record
    return records


def file_digest(path: str | os.PathLike) -> tuple[str, int] | None:
    """``(SHA-256, size)`` of a file, or None when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest(), len(data)


def finished(plan: Plan, records: dict[int, dict]) -> dict[int, dict]:
    """The records of the plan's items that are finished: failed, or done with their output
    still the file that was written (its SHA-256)."""
    kept = {}
    for index, record in records.items():
        if not 0 <= index < len(plan.items):
            continue
        if record.get("status") == "failed":
            kept[index] = record
        elif record.get("status") == "done":
            found = file_digest(plan.items[index].output)
            if found is not None and list(found) == [record.get("sha256"), record.get("size")]:
                kept[index] = record
    return kept


def refuse_foreign(out: str | os.PathLike) -> None:
    """Refuse an output folder whose manifest cannot be this job's (not our format)."""
    if (folder(out) / "plan.json").exists():
        read_plan(out)


def describe(out: str | os.PathLike) -> str:
    """One line on a job's folder, for messages."""
    return shown(folder(out))
