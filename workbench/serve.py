"""Serving generation to many clients: frames of steps for a streaming server.

:func:`step_batches` runs one generation (any iterator of steps, in this process or from a worker of
:mod:`workbench.workers`) on a thread of its own and hands the server the steps made since its last frame, so the
model keeps generating while the server encodes and sends.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

_END = object()  # what the generating thread puts last


def step_batches(steps: Iterator[T], should_stop: Callable[[], bool], frame_seconds: float) -> Iterator[list[T]]:
    """Run ``steps`` on a thread of its own and yield the steps made so far, at most once per ``frame_seconds``.

    The model keeps generating while the server turns the last batch into a frame and sends it: the two overlap
    instead of taking turns. The first step comes out alone, as soon as it exists; the last ones as soon as the
    generation ends. ``should_stop`` is asked after every step; closing this generator (a cancelled or vanished
    client) also stops the thread after its current step.
    An exception in the thread is raised here.
    """
    made: queue.SimpleQueue = queue.SimpleQueue()
    closed = threading.Event()

    def produce() -> None:
        try:
            for s in steps:
                made.put(s)
                if closed.is_set() or should_stop():
                    break
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            made.put(err)
        finally:
            close = getattr(steps, "close", None)
            if close is not None:  # a generator left early: run its cleanup now (a worker stops and is freed)
                close()
            made.put(_END)

    threading.Thread(target=produce, name="workbench-generate", daemon=True).start()
    frame_at = -math.inf
    try:
        while True:
            batch = [made.get()]
            # Gather steps until the frame is due; the end (or an error) goes out at once, so the last tokens
            # do not wait out a frame interval. The first step always goes alone.
            while frame_at > -math.inf and batch[-1] is not _END and not isinstance(batch[-1], BaseException):
                wait = frame_at + frame_seconds - time.perf_counter()
                try:
                    batch.append(made.get(timeout=wait) if wait > 0 else made.get_nowait())
                except queue.Empty:
                    break
            frame_at = time.perf_counter()
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
            steps_made = [item for item in batch if item is not _END]
            if steps_made:
                yield steps_made
            if batch[-1] is _END:
                return
    finally:
        closed.set()


