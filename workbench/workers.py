"""Generation in worker processes, for a server that has Python work of its own to do.

A small model on the CPU spends most of a decoding step in Python (hundreds of small torch calls), and so does a
web server encoding frames. In one process the two share one interpreter lock: whenever the server holds it, the
model waits, even with a core free. Measured with the app (benchmarks/app.py), a generating thread beside the
server ran at 0.6x the speed of the bare loop. A worker process has an interpreter of its own.

:class:`GenerationPool` starts ``size`` workers, each holding the model (its weights in shared memory, not copied)
and the tokenizer. :meth:`GenerationPool.stream` borrows an idle worker and yields the :class:`Step` records it
sends back, exactly what :func:`workbench.generate.stream` yields in-process, or with ``view`` what that function
makes of each step, run in the worker (a server that needs a few fields of each step receives only those, and
does not spend its interpreter on rebuilding the rest). Closing the iterator early (a Stop,
a vanished client) tells the worker to stop after its current step, and the worker goes back to the pool.
"""

from __future__ import annotations

import ctypes
import pickle
import queue
import signal
import threading
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.multiprocessing as mp

from workbench.generate import SamplingConfig, stream
from workbench.model import GPT
from workbench.records import Step
from workbench.tokenizers import Tokenizer

_END = "end"  # what a worker sends after a generation's last step (or its error)


def _work(conn, stop, model: GPT, tok: Tokenizer | None, threads: int) -> None:
    """A worker's loop: one generation per request, each step sent as soon as it exists."""
    # Ctrl+C in a terminal reaches the whole process group: the server handles it and ends its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the server is gone: nothing left to serve
            return
        if request is None:
            return
        prompt, cfg, view = request
        try:
            for step in stream(model, tok, prompt, cfg):
                # Plain pickle, not the connection's own: that one moves every tensor into a new shared-memory
                # segment, which costs more than a small model's decoding step.
                item = step.to_wire() if view is None else view(step)
                conn.send_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
                if stop.value:
                    break
        except Exception as err:  # noqa: BLE001 - handed to the server, which raises it for this request only
            conn.send_bytes(pickle.dumps(err))
        conn.send_bytes(pickle.dumps(_END))


def start_ignoring_ctrl_c(process) -> None:
    """Start a worker process that ignores SIGINT from its first instruction, not only once its loop runs.

    Ctrl+C in a terminal reaches the whole process group. A worker still importing torch when it comes would die with
    a traceback in the server's log; the server ends its workers itself. An ignored signal stays ignored across the
    ``exec`` of a spawned process, and Python then installs no handler of its own. Only the main thread may change
    a signal's handler: a worker started from another thread (a replacement) ignores SIGINT once its loop runs.
    """
    if threading.current_thread() is not threading.main_thread():
        process.start()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


class _Worker:
    def __init__(self, context, model: GPT, tok: Tokenizer | None, threads: int) -> None:
        self.conn, child = context.Pipe()
        # A flag in shared memory, not an Event: an Event holds semaphores, which the resource tracker reports as
        # leaked when the server is stopped with Ctrl+C.
        self.stop = context.RawValue(ctypes.c_bool, False)
        self.process = context.Process(
            target=_work, args=(child, self.stop, model, tok, threads), name="workbench-generate", daemon=True
        )
        start_ignoring_ctrl_c(self.process)
        child.close()


class GenerationPool:
    """``size`` worker processes that generate with ``model`` and ``tok``, each on ``threads`` torch threads."""

    def __init__(self, model: GPT, tok: Tokenizer | None, size: int, threads: int = 1) -> None:
        if model.device.type != "cpu":
            raise ValueError("worker processes are for CPU models; a GPU model generates in the server's process")
        self._context = mp.get_context("spawn")  # fork would copy torch's thread pools in an unusable state
        self._args = (model.share_memory(), tok, threads)
        self._tok = tok
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers = [_Worker(self._context, *self._args) for _ in range(size)]
        for worker in self._workers:
            self._idle.put(worker)

    def stream(self, prompt: str | Sequence[int], cfg: SamplingConfig,
               view: Callable[[Step], Any] | None = None) -> Iterator[Any]:
        """Like :func:`workbench.generate.stream` with full capture, run by the next idle worker; with ``view`` (a
        module-level function, so that it pickles by name), ``view(step)`` for each step, computed in the worker."""
        worker = self._idle.get()
        finished = False
        try:
            worker.stop.value = False
            worker.conn.send((prompt, cfg, view))
            while True:
                item = pickle.loads(worker.conn.recv_bytes())
                if isinstance(item, str) and item == _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                yield Step.from_wire(item, self._tok) if view is None else item
        except (EOFError, OSError) as err:  # the worker died: replace it, fail this request only
            worker = self._replace(worker)
            finished = True
            raise RuntimeError("the generation worker stopped unexpectedly; please try again") from err
        finally:
            if not finished:  # closed early: stop the worker and drain what it already sent
                worker.stop.value = True
                try:
                    while not (isinstance(item := pickle.loads(worker.conn.recv_bytes()), str) and item == _END):
                        pass
                except (EOFError, OSError):
                    worker = self._replace(worker)
            self._idle.put(worker)

    def _replace(self, dead: _Worker) -> _Worker:
        dead.process.kill()
        fresh = _Worker(self._context, *self._args)
        self._workers[self._workers.index(dead)] = fresh
        return fresh

    def close(self) -> None:
        """Stop every worker: a generation under way ends after its current step (its stream ends as a stopped one
        would, with no error), then the worker exits."""
        for worker in self._workers:
            worker.stop.value = True
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
