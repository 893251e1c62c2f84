"""One run at a time for each shard of a job: a second run of the same shard on the same
output folder (two identical commands started together, say) is refused in one line
rather than doing all the work again beside the first.

The lock is ``fcntl.flock`` on ``OUT/.nst-jax/lock-I-of-N``: the kernel releases it when
its process ends however it ends, so a killed run never leaves a stale lock behind, and a
rerun continues at once. Different shards of one job run side by side, each with its own
lock. Where ``fcntl`` is missing (Windows) shards are not locked.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from nst_jax.dataset.manifest import folder
from nst_jax.errors import InputError, shown


@contextlib.contextmanager
def shard_lock(out: str | os.PathLike, shard: tuple[int, int]) -> Iterator[None]:
    """Hold shard ``shard``'s lock in the job's folder ``out`` while the block runs.

    Raises:
      InputError: another process holds it (one line naming its process id).
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks here
        yield
        return
    path = folder(out) / f"lock-{shard[0]}-of-{shard[1]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:  # not following a link, not blocking on a pipe
        descriptor = os.open(path, flags, 0o666)
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot be the job's lock file ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise InputError(f"{shown(path)}: cannot be the job's lock file (not a regular file)")
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            raise InputError(
                f"{shown(out)}: another run (process {holder}) is running shard "
                f"{shard[0]}/{shard[1]} of this job; wait for it, or stop it"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock
