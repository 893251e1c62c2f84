"""Optical flow between content frames, computed on CPU threads ahead of the frame being
optimised.

DIS (Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016) and
Farneback's method come with ``opencv-python-headless`` (the ``video`` extra): no weights,
milliseconds a frame pair at 256 px, where the DeepFlow binaries Ruder et al. used take
seconds. OpenCV releases the GIL while it computes, so threads overlap the device's steps.

For frame ``i`` and each offset ``j`` (``--flow-offsets``), the *backward* flow (frame ``i``
-> ``i - j``) warps the stylised frame ``i - j`` onto frame ``i``, and the *forward* flow
(``i - j`` -> ``i``) checks it (:func:`nst_jax.core.temporal.consistency_weights`).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from nst_jax.errors import InputError
from nst_jax.video.settings import FLOW_METHODS, check_offsets

METHODS = FLOW_METHODS


def require() -> None:
    """Raise ``InputError`` with the install hint unless OpenCV is installed."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise InputError(
            "video needs OpenCV's optical flow: pip install 'nst_jax[video]'"
        ) from None


class FrameFlows(NamedTuple):
    """The flows of one frame, one row per offset.

    Attributes:
      backward: ``(J, H, W, 2)`` float32, frame ``i`` -> ``i - j``; zeros where ``i < j``.
      forward: ``(J, H, W, 2)`` float32, frame ``i - j`` -> ``i``; zeros where ``i < j``.
      present: ``(J,)`` bool, whether frame ``i - j`` exists.
      seconds: CPU time spent computing them (wall clock of the worker).
    """

    backward: np.ndarray
    forward: np.ndarray
    present: np.ndarray
    seconds: float


def grey(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float RGB in [0, 1] -> ``(H, W)`` uint8 luma (ITU-R BT.601), what the
    flow methods read."""
    import cv2

    pixels = np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from grey frame ``a`` to ``b``: ``(H, W, 2)`` float32 ``(dx, dy)`` at
    ``a``'s pixels, so that ``a(p) ~ b(p + flow(p))``.

    Args:
      a, b: ``(H, W)`` uint8 (:func:`grey`).
      method: ``"dis"`` (OpenCV's medium preset) or ``"farneback"`` (OpenCV's example
        settings: pyramid scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2).
    """
    import cv2

    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f"flow method: expected one of {', '.join(METHODS)}, got {method!r}")


def frame_flows(
    greys: dict[int, np.ndarray], index: int, offsets: Sequence[int], method: str
) -> FrameFlows:
    """Backward and forward flows of frame ``index`` for each offset (``greys`` holds frame
    ``index`` and those before it that exist)."""
    start = time.perf_counter()
    current = greys[index]
    zero = np.zeros((*current.shape, 2), np.float32)
    backward, forward, present = [], [], []
    for offset in offsets:
        earlier = greys.get(index - offset)
        present.append(earlier is not None)
        backward.append(zero if earlier is None else optical_flow(current, earlier, method))
        forward.append(zero if earlier is None else optical_flow(earlier, current, method))
    seconds = time.perf_counter() - start
    return FrameFlows(np.stack(backward), np.stack(forward), np.array(present), seconds)


_END = object()


class FlowFeeder:
    """Frames in order with their flows, decoded and computed ahead on threads.

    A reader thread decodes frames and hands each frame's flows to ``workers`` threads; at
    most ``ahead`` frames wait finished or in progress, so memory stays bounded. Iterating
    yields ``(index, frame, FrameFlows)`` from ``start`` on (the flows' rows follow the
    offsets in increasing order); the frames before ``start`` that its offsets reach are
    read for their flows only. ``waited`` adds up the seconds the consumer waited. Use it
    in a ``with`` block (or call :meth:`close`) so its threads stop whatever happens.
    """

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        first: int,
        start: int,
        offsets: Sequence[int],
        method: str,
        workers: int = 2,
        ahead: int = 4,
    ):
        self.offsets, self.method = check_offsets(offsets), method
        self.first, self.start = first, start
        self.waited = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="nst-jax-flow")
        self._thread = threading.Thread(target=self._read, args=(iter(frames),), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, frames: Iterator[np.ndarray]) -> None:
        window: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        reach = max(self.offsets)
        try:
            for index, frame in enumerate(frames, self.first):
                window[index] = grey(frame)
                while next(iter(window)) < index - reach:
                    window.popitem(last=False)
                if index < self.start:
                    continue
                job = self._pool.submit(frame_flows, dict(window), index, self.offsets, self.method)
                if not self._put((index, frame, job)):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(error)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, FrameFlows]]:
        try:
            while True:
                began = time.perf_counter()
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                index, frame, job = item
                flows = job.result() if isinstance(job, Future) else job
                self.waited += time.perf_counter() - began
                yield index, frame, flows
        finally:
            self.close()

    def __enter__(self) -> FlowFeeder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and computing (also when the consumer stops early)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
