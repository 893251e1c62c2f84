"""What a job has done: one JSON line per finished item in ``OUT/.nst-jax/done-I-of-N.jsonl``,
read back as untrusted data, and each shard's index of results.

A record names its fields: the item, ``status`` (``done`` or ``failed``), its ``input``,
``output``, ``styles`` and ``seed``, the input's identity (size, modification time,
SHA-256), a done result's SHA-256 and size or a failure's ``reason``, and the ``plan`` it
belongs to. Read back, a record counts only when it is whole, of this plan, in the file of
the shard its item belongs to (another shard layout's or another plan's records are not
trusted), and when what it says still holds:

- a done item's output still has the recorded SHA-256, and its input is the same file
  (size and modification time, else the same SHA-256): a changed input's result is redone;
- a failed item's input is unchanged: an input fixed since is retried (``retry_failed``
  retries every failure).

Only the last record of an item counts. Records are appended and synced to disk before the
job goes on; a line cut short by a kill is passed over. Nothing is written through a
symbolic link: a job's folder that holds one is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nst_jax.dataset.manifest import folder
from nst_jax.dataset.plan import Item, Plan
from nst_jax.errors import InputError, shown
from nst_jax.files.atomic import atomic_write
from nst_jax.files.digest import sha256

STATUSES = ("done", "failed")
LINE_BYTES = 2**16  # a longer line is no record of ours
RECORDS = re.compile(r"done-(\d+)-of-(\d+)\.jsonl")


def records_path(out: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """The file a shard appends its items' records to."""
    return folder(out) / f"done-{shard[0]}-of-{shard[1]}.jsonl"


def identity(path: str | os.PathLike) -> dict | None:
    """A file's identity: ``{"size", "mtime_ns", "sha256"}``, or ``None`` when it cannot be
    read."""
    try:
        info = os.stat(path)
        return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha256(path)}
    except OSError:
        return None


def same_file(path: str | os.PathLike, recorded: Any) -> bool:
    """Whether ``path`` is still the file ``recorded`` (:func:`identity`): the same size and
    modification time, or else the same SHA-256."""
    if not isinstance(recorded, dict):
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    if info.st_size != recorded.get("size"):
        return False
    if info.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    try:
        return sha256(path) == recorded.get("sha256")
    except OSError:
        return False


def file_digest(path: str | os.PathLike) -> tuple[str, int] | None:
    """``(SHA-256, size)`` of a file, or None when it cannot be read or is no regular file
    (a pipe would block, a link to ``/dev/zero`` never end: neither is a result written)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        data = Path(path).read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest(), len(data)


def record(plan: Plan, item: Item, status: str, reason: str | None = None) -> dict:
    """The record of an item's outcome (a done item's output hashed), its fields named."""
    line = {
        "item": item.index,
        "status": status,
        "input": item.input,
        "output": item.output,
        "styles": [plan.style_names[s] for s in item.styles] if plan.style_names else [],
        "seed": item.seed,
        "identity": identity(item.input),
        "plan": plan.settings_hash,
    }
    if status == "failed":
        line["reason"] = reason
    else:
        line["sha256"], line["size"] = file_digest(item.output) or (None, None)
    return line


def append(plan: Plan, shard: tuple[int, int], records: Iterable[dict]) -> None:
    """Append records and put them on disk (``fsync``) before the job goes on; never
    through a symbolic link."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    if not lines:
        return
    path = records_path(plan.out, shard)
    check_own_folder(plan.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o666)
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            # A kill mid-append left half a line: end it (it stays an untrusted line), or
            # the first new record would be glued to it and lost.
            lines = "\n" + lines
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot be written ({e.strerror})") from None
    with os.fdopen(descriptor, "a") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def check_own_folder(out: str | os.PathLike) -> None:
    """Refuse a job's folder whose ``.nst-jax`` is a symbolic link (its records and plan
    would be written elsewhere)."""
    path = folder(out)
    if path.is_symlink():
        raise InputError(f"{shown(path)}: is a symbolic link; a job writes only into OUT")


def read_records(plan: Plan) -> dict[int, dict]:
    """Every trusted record of the plan's items, the last of each (module docstring)."""
    check_own_folder(plan.out)
    records: dict[int, dict] = {}
    # Oldest file first, so that the newest record of an item counts across shard layouts
    # (a 0-of-1 rerun after a 0-of-2 run): names alone would sort 0-of-2 after it.
    for path in sorted(folder(plan.out).glob("done-*-of-*.jsonl"), key=_written):
        named = RECORDS.fullmatch(path.name)
        if named is None or path.is_symlink():
            continue
        shard = (int(named.group(1)), int(named.group(2)))
        members = shard_items(plan, shard)
        for line in _lines(path):
            entry = _record(line, plan, members)
            if entry is not None:
                records[entry["item"]] = entry
    return records


def _written(path: Path) -> tuple[int, str]:
    try:
        return path.lstat().st_mtime_ns, path.name
    except OSError:
        return 0, path.name


def _lines(path: Path) -> list[bytes]:
    try:
        if not stat.S_ISREG(path.lstat().st_mode):  # a pipe would block the job
            return []
        data = path.read_bytes()
    except OSError:
        return []
    return [line for line in data.splitlines() if len(line) <= LINE_BYTES]


def _record(line: bytes, plan: Plan, members: set[int]) -> dict | None:
    """The record a line holds, if it is a whole record of this plan's shard."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or entry.get("plan") != plan.settings_hash:
        return None
    item = entry.get("item")
    if isinstance(item, bool) or not isinstance(item, int) or item not in members:
        return None
    if entry.get("status") == "failed" and not isinstance(entry.get("reason"), str):
        return None  # a reason is shown and written to the index as text
    return entry if entry.get("status") in STATUSES else None


def shard_items(plan: Plan, shard: tuple[int, int]) -> set[int]:
    """The items of shard ``shard``: its batches' items and its share of the items that
    failed at planning (every count-th); empty for a shard that cannot exist."""
    index, count = shard
    if not 0 <= index < count:
        return set()
    mine = {i for batch in plan.shard(index, count) for i in batch.items}
    failed = [item.index for item in plan.items if item.batch < 0]
    return mine | set(failed[index::count])


def finished(plan: Plan, records: dict[int, dict], retry_failed: bool = False) -> dict:
    """The records of the plan's items that are finished (module docstring)."""
    kept = {}
    for index, entry in records.items():
        if not 0 <= index < len(plan.items):
            continue
        item = plan.items[index]
        if not same_file(item.input, entry.get("identity")) and item.batch >= 0:
            continue  # a changed input is redone
        if entry["status"] == "failed" and not retry_failed:
            kept[index] = entry
        elif entry["status"] == "done":
            found = file_digest(item.output)
            if found is not None and list(found) == [entry.get("sha256"), entry.get("size")]:
                kept[index] = entry
    return kept


INDEX_FIELDS = ("input", "output", "styles", "seed", "status", "reason")


def write_index(plan: Plan, shard: tuple[int, int], records: dict[int, dict]) -> Path:
    """``OUT/.nst-jax/index-I-of-N.csv``: a row per item of the shard, its named fields
    (``status`` ``pending`` for an item not yet finished)."""
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(INDEX_FIELDS)
    for index in sorted(shard_items(plan, shard)):
        item, entry = plan.items[index], records.get(index, {})
        styles = ";".join(plan.style_names[s] for s in item.styles) if plan.style_names else ""
        status = entry.get("status", "pending")
        writer.writerow([item.input, item.output, styles, item.seed, status,
                         entry.get("reason") or item.reason or ""])  # fmt: skip
    path = folder(plan.out) / f"index-{shard[0]}-of-{shard[1]}.csv"
    text = rows.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_text(text, errors="surrogateescape"))
