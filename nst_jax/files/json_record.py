"""The JSON records nst_jax keeps beside its outputs (a video's and a training run's record,
a job's record of its sheets, a model's ``model.json``), read back as untrusted data: only a
regular file (a pipe would block the run, a device never end) of a bounded size."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

# Far above any record nst_jax writes: a larger file is no record of ours.
MAX_BYTES = 2**30


def read(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON value stored in ``path``.

    Raises:
      OSError: the file cannot be opened or read (missing, a permission).
      ValueError: not a regular file, over ``max_bytes``, not UTF-8 or not JSON (its reason).
    """
    # Opened without blocking, then looked at: a pipe put there after a look would block.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        with open(descriptor, "rb", closefd=False) as file:
            payload = file.read(max_bytes + 1)  # a file that grew meanwhile is cut here
    finally:
        os.close(descriptor)
    if info.st_size > max_bytes or len(payload) > max_bytes:
        raise ValueError(f"over {max_bytes} bytes")
    try:
        return json.loads(payload.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
