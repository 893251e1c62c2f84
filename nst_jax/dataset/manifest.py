"""A job's manifest in its output folder: its plan (what each shard has done is in
:mod:`.records`).

``OUT/.nst-jax/plan.json`` holds the plan (settings with every style's SHA-256, their hash,
every item with its input, output, styles, seed and batch), written once, atomically,
before any pixel work. Rerunning the job plans it again and continues only when the plan is
the one stored: other settings, a style whose bytes changed, or inputs whose names or
headers changed are refused in one line naming what differs.

Everything read back is untrusted: a manifest that is not this format, larger than
:data:`MAX_BYTES`, or of another version is refused in one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from nst_jax.config import StyleConfig
from nst_jax.dataset.plan import (
    Batch,
    Item,
    JobSettings,
    Plan,
    batch_key,
    batches_of,
    with_batches,
)
from nst_jax.dataset.styles import distinct_names
from nst_jax.errors import InputError, shown
from nst_jax.files.atomic import atomic_write

FOLDER = ".nst-jax"
FORMAT = "nst_jax-dataset"
# 2: styles' SHA-256 in the settings, records of named fields tied to their plan.
VERSION = 2
MAX_BYTES = 2**30  # a manifest larger than this is no job of ours


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
    return atomic_write(path, lambda tmp: tmp.write_text(text, errors="surrogateescape"))


def read_plan(out: str | os.PathLike) -> dict[str, Any] | None:
    """The stored plan record, or None when the folder holds none.

    Raises:
      InputError: a manifest that is not readable JSON of this format.
    """
    path = folder(out) / "plan.json"
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
        raise InputError(f"{shown(path)}: not an nst_jax job manifest")
    try:
        record = json.loads(path.read_text(errors="surrogateescape"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{shown(path)}: unreadable job manifest ({type(e).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{shown(path)}: not an nst_jax job manifest")
    if record.get("version") != VERSION or not isinstance(record.get("settings"), dict):
        raise InputError(
            f"{shown(path)}: a job manifest of version {record.get('version')!r}, this is "
            f"version {VERSION}: finish it with the version that began it, or --force"
        )
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
    styles = record["settings"].get("styles")
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise InputError(f"{folder(out)}: damaged job manifest (its styles)")
    plan = Plan(Path(out), record["settings"], tuple(styles), items, batches)
    plan.style_names = distinct_names(styles)
    _check_consistent(plan, folder(out))
    return plan


def _check_consistent(plan: Plan, where: Path) -> None:
    """Refuse a stored plan whose batches and items do not point at each other."""
    count, styles = len(plan.items), len(plan.styles)
    job = plan.settings.get("job") if isinstance(plan.settings.get("job"), dict) else {}
    max_dim, batch_size = job.get("max_dim"), job.get("batch_size")
    placed: dict[int, int] = {}
    for batch in plan.batches:
        if not (
            all(isinstance(i, int) and 0 <= i < count and i not in placed for i in batch.items)
            and _within(batch.shape, max_dim)
            and _within((batch.slots,), batch_size)
            and len(batch.shape) == 2
            and len(batch.items) <= batch.slots
        ):
            raise InputError(f"{where}: damaged job manifest (batch {batch.index})")
        placed |= dict.fromkeys(batch.items, batch.index)
    for item in plan.items:  # in its batch, or in none with the reason it failed planning
        if placed.get(item.index, -1) != item.batch or (item.batch == -1) != bool(item.reason):
            raise InputError(f"{where}: damaged job manifest (item {item.index}'s batch)")
    for item in plan.items:
        if not all(isinstance(s, int) and 0 <= s < styles for s in item.styles):
            raise InputError(f"{where}: damaged job manifest (item {item.index}'s styles)")


def _within(values: tuple, largest: Any) -> bool:
    """Whether ``values`` are ints from 1 to ``largest`` (an int itself)."""
    return (
        type(largest) is int
        and len(values) > 0
        and all(type(v) is int and 1 <= v <= largest for v in values)
    )


# An item's definition in the stored record: input, output, styles, setting, seed. Its
# shape, batch and reason follow from its header, which may change between runs.
DEFINITION = 5


def check_same(plan: Plan, stored: dict[str, Any], batches: bool = False) -> None:
    """Refuse to continue a stored job with other settings, styles or inputs, naming the
    first difference (one line). ``batches``: the items' shapes and batches must be the
    stored ones too (the plan a run runs is the manifest's: :func:`continued`)."""
    path = folder(plan.out) / "plan.json"
    difference = _first_difference(stored["settings"], plan.settings)
    styles = plan.settings.get("styles_sha256", [])
    stored_styles = stored["settings"].get("styles_sha256") or []
    for style, was, now in zip(plan.styles, stored_styles, styles, strict=False):
        if was != now:
            raise InputError(f"{shown(style)}: the style changed since the job began (its "
                             "SHA-256); --force starts the job over")  # fmt: skip
    if difference is not None:
        was, now, name = difference
        raise InputError(
            f"{path}: this folder holds a job with {name}={was}, this one has {name}={now}; "
            "give another -o, or --force to replace it"
        )
    record = plan_record(plan)
    items = stored.get("items") if isinstance(stored.get("items"), list) else []
    mine = [item[:DEFINITION] for item in record["items"]]
    if [item[:DEFINITION] if isinstance(item, list) else item for item in items] != mine:
        raise InputError(
            f"{path}: this folder holds a job of other inputs ({_changed(stored, record)}); "
            "give another -o, or --force to replace it"
        )
    if batches and (items != record["items"] or stored.get("batches") != record["batches"]):
        raise InputError(f"{path}: the plan run is not the job's manifest: start the job "
                         "first (dataset.start(plan))")  # fmt: skip


def continued(plan: Plan, stored: Plan) -> Plan:
    """The plan a continued job runs: the stored one (its batches are what earlier runs
    ran), each item whose header failed at planning but reads now put in new batches at
    the end (a fixed input is run, as an uninterrupted job would run it).

    Raises:
      InputError: an input whose size changed since the job was planned (its result would
        be another size): the job must start over.
    """
    config = StyleConfig(**_config_fields(stored.settings["config"]))
    job = JobSettings(**_job_fields(stored.settings["job"]))
    for batch in stored.batches:  # what each runs at follows from its items' headers
        try:
            keys = {batch_key(stored.items[i], config, job) for i in batch.items}
        except (TypeError, ValueError):  # an item's shape that is not one
            keys = set()
        if keys != {(batch.shape, batch.program)}:
            raise InputError(f"{folder(stored.out)}: damaged job manifest (batch "
                             f"{batch.index}'s shape or program)")  # fmt: skip
    recovered = []
    for was, now in zip(stored.items, plan.items, strict=True):
        if was.reason is not None and now.reason is None:
            recovered.append(dataclasses.replace(was, shape=now.shape, reason=None))
        elif was.reason is None and now.reason is None and was.shape != now.shape:
            raise InputError(f"{shown(now.input)}: its size changed since the job was "
                             "planned; --force starts the job over")  # fmt: skip
    if not recovered:
        return stored
    items = list(stored.items)
    for item in recovered:
        items[item.index] = item
    extra = batches_of(recovered, config, job, len(stored.batches))
    return dataclasses.replace(stored, items=with_batches(items, extra),
                               batches=stored.batches + extra)  # fmt: skip


def _config_fields(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _job_fields(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _changed(stored: dict, record: dict) -> str:
    """The first input whose item differs between the stored plan and this one."""
    old = stored.get("items") if isinstance(stored.get("items"), list) else []
    was = [o[0] for o in old if isinstance(o, list) and o and isinstance(o[0], str)]
    now = [item[0] for item in record["items"]]
    known_now, known_was = set(now), set(was)
    gone = [p for p in was if p not in known_now]
    if gone:  # the input that left names the change, not the first item after it
        return f"{shown(gone[0])} is no longer among the inputs"
    new = [p for p in now if p not in known_was]
    if new:
        return f"{shown(new[0])} was not among the job's inputs"
    for k, item in enumerate(record["items"]):
        if (
            k >= len(old)
            or not isinstance(old[k], list)
            or old[k][:DEFINITION] != item[:DEFINITION]
        ):
            return f"{shown(item[0])} differs"
    return f"{len(old) - len(record['items'])} more items there"


def _first_difference(saved: Any, current: Any, name: str = "") -> tuple | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(key), current.get(key), key)
            if found is not None:
                return found
        return None
    return None if saved == current else (saved, current, name)


def refuse_foreign(out: str | os.PathLike) -> None:
    """Refuse an output folder whose manifest cannot be this job's (not our format)."""
    if (folder(out) / "plan.json").exists():
        read_plan(out)


def describe(out: str | os.PathLike) -> str:
    """One line on a job's folder, for messages."""
    return shown(folder(out))
