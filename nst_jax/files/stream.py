"""Streaming loads: files decoded by background threads, a bounded number ahead of the work.

A job over a whole dataset cannot load it first (100,000 images at 512 px are about 240 GB
as float32). :func:`prefetch` runs ``load`` on the next few tasks in worker threads while
the caller works on the current one, and yields the results in the tasks' order; at most
``ahead`` results wait at any time, so memory stays bounded whatever the dataset's size.
Threads suffice: Pillow's decoders and NumPy's resizing release the GIL.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


def prefetch(
    tasks: Iterable[Task],
    load: Callable[[Task], Result],
    workers: int = 2,
    ahead: int = 2,
) -> Iterator[tuple[Task, Result]]:
    """``(task, load(task))`` for each task, in order, with up to ``ahead`` tasks loading (or
    loaded and waiting) beyond the one yielded. An exception of ``load`` is raised when its
    task's turn comes, as if loaded there.

    Args:
      tasks: what to load, in the order wanted.
      load: loads one task (run in a worker thread).
      workers: worker threads.
      ahead: most tasks loaded beyond the caller's (bounds memory).
    """
    pending: collections.deque[tuple[Task, Future]] = collections.deque()
    tasks = iter(tasks)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nst-jax-load") as pool:
        try:
            for task in tasks:
                pending.append((task, pool.submit(load, task)))
                if len(pending) > ahead:
                    first, future = pending.popleft()
                    yield first, future.result()
            while pending:
                first, future = pending.popleft()
                yield first, future.result()
        finally:
            for _, future in pending:
                future.cancel()
