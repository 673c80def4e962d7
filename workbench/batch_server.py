"""Serving the batched decoder: decoding loops shared by every session, fed by a server's requests.

:class:`BatchedPool` has the interface of :class:`workbench.workers.GenerationPool` (``stream(prompt, cfg,
view=None)`` and ``close()``), so an app switches between them in one line. Behind it each loop runs a
:class:`~workbench.batching.BatchedDecoder`: it takes the requests that arrived, prefills them, steps the whole
batch once and sends each sequence's step (or a request's ``view(step)``) to its request, again and again. A
sequence alone in its batch has its view made on the server's side, on the request's own thread, so that its
loop's core spends itself on the model (a worker then sends the step in its compact wire form,
:meth:`~workbench.records.Step.to_wire`, cheaper to make than any view of it); in a worker process, a sequence
that shares its batch has its view made in the loop (see :func:`_loop`). Where the loops run:

* on the CPU, in worker processes (``process=True``, the default there): the server's Python work must not share
  an interpreter lock with the model (see :mod:`workbench.workers`). The model's weights are shared with them,
  not copied. A one-thread loop keeps one core busy, so there is one loop per core (``loops``), each with its
  share of the sessions: a step is half model, half per-sequence sampling and capture, and only the model's half
  would gain from a second thread;
* on a GPU, on a thread of the server's process (the GPU does the work, not the interpreter).

Limits: ``max_batch`` sequences decode together; ``max_tokens`` cache positions (each sequence holds up to its
prompt plus its new tokens, at most the context) are held at most; a request that does not fit now waits, in order
of arrival, and at most ``max_waiting`` wait. Refusals come when :meth:`BatchedPool.stream` is called, before any
work: a request that alone needs more than ``max_tokens`` (:class:`ValueError`), or that finds ``max_waiting``
requests waiting (:class:`PoolBusy`), each with a message that says so.

Stop, a vanished client (closing the iterator) and an error end only their own sequence; if a worker process
dies, its requests in flight fail with a message and a new worker takes its place.
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import queue
import signal
import socket
import threading
import time
from typing import Any, Callable, Hashable, Iterator, NamedTuple, Sequence

import torch
import torch.multiprocessing as mp

from workbench.batching import BatchedDecoder, Emitted
from workbench.generate import prompt_ids
from workbench.model import GPT
from workbench.records import Step
from workbench.sampling import SamplingConfig
from workbench.tokenizers import Tokenizer
from workbench.workers import start_ignoring_ctrl_c

DEFAULT_MAX_BATCH = 32  # a class: thirty students pressing Generate at once
DEFAULT_MAX_TOKENS = 16_384  # cache positions: 150 MB for the shipped model, 1.2 GB for GPT-2 small
DEFAULT_MAX_WAITING = 64
SEND_SECONDS = 0.02  # a loop sends the steps in the middle of a run at most this long after making them
# What a worker may have sent that the server has not read yet (see _widen); the system's limit caps it.
SEND_BUFFER_BYTES = 1 << 20

_END = "end"  # what the loop sends after a sequence's last step (or its error)


def default_loops(threads: int) -> int:
    """Decoding loops for a CPU model whose loops run on ``threads`` threads each: one per ``threads`` cores."""
    return max(1, len(os.sched_getaffinity(0)) // threads)


class PoolBusy(RuntimeError):
    """Too many requests are already waiting for room in the batch."""


# ---- the decoding loop (in the worker process, or on a thread) ------------------------------------------------

class _Viewed(NamedTuple):
    """What a request's view made of a step, made by the loop (see :func:`_loop`)."""

    data: Any


def _loop(inbox: Callable[[bool], list], send: Callable[[list], None], model: GPT, tok: Tokenizer | None,
          view_shared: bool) -> None:
    """Take requests, step the batch, send what it made, until told to stop (``None``) or the server is gone.

    ``inbox(block)`` returns the messages that arrived (waiting for one when ``block``); ``send(items)`` sends a
    list of ``(key, item)``: an item is a step, a :class:`_Viewed` step, an exception, or ``_END``. Steps in the
    middle of a run wait up to ``SEND_SECONDS`` to go out together (one message instead of several: less work for
    both sides, and the server's frames gather steps for longer anyway); a run's first step, its end and an error
    go out at once.

    Where a request's view runs: a sequence alone in the batch sends its steps as they are, and the server makes
    the view, so that the loop's core spends itself on the model (a lone sequence on a machine with spare cores:
    one session, a demo). With ``view_shared`` (worker processes), a sequence that shares the batch has its view
    made here: then every core is a loop's, and views made by the server would take the loops' cores and hold the
    server's interpreter lock, for every step of every session.
    """
    decoder = BatchedDecoder(model, tok)
    views: dict[Hashable, Callable[[Step], Any] | None] = {}
    items: list = []
    sent_at = time.perf_counter()

    def out(emitted: Emitted, shared: bool) -> bool:
        """Queue what a sequence made (its view made here when ``shared``); True when it must go out now."""
        view = views.get(emitted.key)
        if emitted.error is not None:
            items.append((emitted.key, emitted.error))
        elif emitted.step is not None and view is not None and shared and view_shared:
            try:
                items.append((emitted.key, _Viewed(view(emitted.step))))
            except Exception as err:  # noqa: BLE001 - the view failed for this request only
                items.append((emitted.key, err))
                decoder.remove(emitted.key)
                emitted.last = True
        elif emitted.step is not None:
            items.append((emitted.key, emitted.step))
        if emitted.last:
            items.append((emitted.key, _END))
            views.pop(emitted.key, None)
        return emitted.last or emitted.error is not None or (emitted.step is not None and emitted.step.index == 0)

    def flush(urgent: bool) -> None:
        """Send what is queued if it must go now, if the batch is empty, or SEND_SECONDS after the last send."""
        nonlocal items, sent_at
        if items and (urgent or not len(decoder) or time.perf_counter() - sent_at >= SEND_SECONDS):
            send(items)
            items = []
            sent_at = time.perf_counter()

    while True:
        urgent = False
        for message in inbox(len(decoder) == 0 and not items):
            if message is None:
                return
            kind, key, *rest = message
            if kind == "start":
                prompt, cfg, views[key] = rest
                shared = len(decoder) > 0
                try:
                    urgent |= out(decoder.add(key, prompt, cfg), shared)
                except Exception as err:  # noqa: BLE001 - bad input ends this request only
                    urgent |= out(Emitted(key, error=err, last=True), shared)
            elif kind == "stop" and key in decoder:
                decoder.remove(key)
                urgent |= out(Emitted(key, last=True), False)
        flush(urgent)  # a first step goes out before the batch's next step, not after it
        shared = len(decoder) > 1
        flush(any([out(emitted, shared) for emitted in decoder.step()]))  # a list: every output is queued


def _work(conn, model: GPT, tok: Tokenizer | None, threads: int) -> None:
    """The worker process: the loop over a pipe, each message pickled plainly (see :mod:`workbench.workers`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the process group: the server ends its worker
    torch.set_num_threads(threads)

    def inbox(block: bool) -> list:
        messages = []
        try:
            if block:
                messages.append(conn.recv())
            while conn.poll():
                messages.append(conn.recv())
        except EOFError:  # the server is gone: nothing left to serve
            messages.append(None)
        return messages

    def send(items: list) -> None:
        conn.send_bytes(pickle.dumps([(key, item.to_wire() if isinstance(item, Step) else item)
                                      for key, item in items], protocol=pickle.HIGHEST_PROTOCOL))

    try:
        _loop(inbox, send, model, tok, view_shared=True)
    except (BrokenPipeError, ConnectionResetError):  # the server went away mid-send: nothing left to serve
        pass


def _widen(conn) -> None:
    """Let the worker's end of the pipe hold SEND_BUFFER_BYTES that the server has not read yet.

    A step with its capture is tens of kilobytes late in a long run, so one send of SEND_SECONDS' steps can
    outgrow a socket's default buffer (about 200 kB on Linux); the worker then waits until the server's reader gets
    the interpreter lock, which the server's own work holds, instead of making the next token. A pipe that is not a
    socket (Windows) is left as it is."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    except OSError:
        pass


# ---- the server's side --------------------------------------------------------------------------------------

class _Loop:
    """One decoding loop as the server sees it: where it runs, how to send it a message, its requests."""

    def __init__(self, pool: BatchedPool) -> None:
        self.pool = pool
        self.keys: set[int] = set()  # requests it runs
        if pool.process:
            self.conn, child = pool.context.Pipe()
            _widen(child)
            self.worker = pool.context.Process(target=_work, args=(child, pool.model, pool.tok, pool.threads),
                                               name="workbench-batch", daemon=True)
            start_ignoring_ctrl_c(self.worker)
            child.close()
            self._send = self.conn.send
        else:
            requests: queue.SimpleQueue = queue.SimpleQueue()
            self.results: queue.SimpleQueue = queue.SimpleQueue()

            def inbox(block: bool) -> list:
                messages = [requests.get()] if block else []
                while not requests.empty():
                    messages.append(requests.get())
                return messages

            self._send = requests.put
            self.worker = threading.Thread(target=self._in_thread, args=(inbox,), name="workbench-batch",
                                           daemon=True)
            self.worker.start()
        # Sends take a lock of their own, never the pool's: a send may wait for the worker to read, and the worker
        # may be waiting for the router, which needs the pool's lock.
        self._sending = threading.Lock()
        threading.Thread(target=pool._route, args=(self,), name="workbench-batch-route", daemon=True).start()

    def post(self, message: tuple | None) -> None:
        """Send the loop a request, a stop or (``None``) the end; a loop that is gone is left to its router."""
        with self._sending:
            try:
                self._send(message)
            except (BrokenPipeError, OSError):
                pass

    def _in_thread(self, inbox: Callable[[bool], list]) -> None:
        try:
            _loop(inbox, self.results.put, self.pool.model, self.pool.tok, view_shared=False)
        finally:
            self.results.put(None)  # the loop ended: its router stops

    def receive(self) -> list | None:
        """The next list of ``(key, item)`` from the loop; None when the loop is gone."""
        if not self.pool.process:
            return self.results.get()
        try:
            return pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            return None

    def join(self) -> None:
        """Wait a little for the loop to end; then end a worker process that did not."""
        self.worker.join(timeout=5)
        if self.pool.process and self.worker.is_alive():
            self.worker.kill()


class BatchedPool:
    """Generation for many sessions through batched decoding loops; see the module docstring.

    ``loops`` decoding loops share the sessions: a new request joins the loop with the fewest. By default, in
    worker processes, one per ``threads`` cores (:func:`default_loops`): on a CPU with several cores, one loop per
    core, each on one thread, keeps every core busy with the whole step (the model, the sampling, the capture), not
    only its matrix products; on a thread of the server (``process=False``, a GPU), one.
    """

    def __init__(self, model: GPT, tok: Tokenizer | None, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_tokens: int = DEFAULT_MAX_TOKENS, max_waiting: int = DEFAULT_MAX_WAITING,
                 process: bool | None = None, loops: int | None = None, threads: int = 1) -> None:
        if process is None:
            process = model.device.type == "cpu"
        if process and model.device.type != "cpu":
            raise ValueError("worker processes are for CPU models; a GPU model decodes on a thread of the server")
        if loops is None:
            loops = default_loops(threads) if process else 1
        for name, value in (("max_batch", max_batch), ("max_tokens", max_tokens), ("max_waiting", max_waiting),
                            ("loops", loops), ("threads", threads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if loops > 1 and not process:
            raise ValueError("several decoding loops need worker processes: on threads they would share one "
                             "interpreter lock")
        self.model, self.tok, self.process, self.threads = model, tok, process, threads
        self.max_batch, self.max_tokens, self.max_waiting = max_batch, max_tokens, max_waiting
        if process:
            self.context = mp.get_context("spawn")  # fork would copy torch's thread pools in an unusable state
            model.share_memory()  # the workers read these weights, no copy
        self._keys = itertools.count()
        self._lock = threading.Condition()
        self._waiting: collections.deque = collections.deque()  # tickets of requests waiting, oldest first
        self._running: dict[int, tuple[queue.SimpleQueue, int]] = {}  # key -> (its items, positions held)
        self._held = 0  # cache positions held by running requests
        self._closed = False
        self._loops = [_Loop(self) for _ in range(loops)]

    def _route(self, loop: _Loop) -> None:
        """Hand each item of ``loop`` to its request; release a request's room when its last item came."""
        while (items := loop.receive()) is not None:
            for key, item in items:
                with self._lock:
                    entry = self._running.get(key)
                    if entry is not None and isinstance(item, str) and item == _END:
                        del self._running[key]
                        loop.keys.discard(key)
                        self._held -= entry[1]
                        self._lock.notify_all()
                if entry is not None:
                    entry[0].put(item)
        with self._lock:  # the loop is gone: fail what it ran; a new worker serves what comes next
            lost = [self._running.pop(key) for key in loop.keys if key in self._running]
            loop.keys.clear()
            self._held -= sum(need for _, need in lost)
            closed = self._closed
            if not closed and self.process:
                loop.worker.kill()
                self._loops[self._loops.index(loop)] = _Loop(self)
            self._lock.notify_all()
        for items, _ in lost:
            if not closed:
                items.put(RuntimeError("the generation worker stopped unexpectedly; please try again"))
            items.put(_END)

    def positions_needed(self, ids: Sequence[int], cfg: SamplingConfig) -> int:
        """Cache positions a request holds at most: its prompt and new tokens, at most the context."""
        return min(len(ids) + cfg.max_new_tokens, self.model.config.block_size)

    def stream(self, prompt: str | Sequence[int], cfg: SamplingConfig,
               view: Callable[[Step], Any] | None = None) -> Iterator[Any]:
        """Like :func:`workbench.generate.stream` with full capture, decoded in a batch; with ``view`` (a
        module-level function, so that it pickles by name into a worker), ``view(step)`` for each step, made here
        or in the loop (see :func:`_loop`); an exception from it ends this request only.

        Raises at once, before any work: ``ValueError`` for a bad prompt or one that alone needs more than
        ``max_tokens`` cache positions, :class:`PoolBusy` when ``max_waiting`` requests already wait."""
        ids, _ = prompt_ids(self.model, self.tok, prompt)
        need = self.positions_needed(ids, cfg)
        if need > self.max_tokens:
            raise ValueError(f"this request needs {need} cache positions (a {len(ids)}-token prompt and up to "
                             f"{cfg.max_new_tokens} new tokens), more than the {self.max_tokens} this server "
                             "holds for all generations together; ask for fewer new tokens")
        with self._lock:
            if self._closed:
                raise RuntimeError("the generation pool is closed")
            if len(self._waiting) >= self.max_waiting:
                raise PoolBusy(f"the server is busy: {len(self._waiting)} requests are already waiting for a "
                               "place in the batch; please try again shortly")
        return self._run(prompt, cfg, view, need)

    def _run(self, prompt: str | Sequence[int], cfg: SamplingConfig, view: Callable[[Step], Any] | None,
             need: int) -> Iterator[Any]:
        # A generator: nothing below runs, and nothing is held, until the caller asks for the first step.
        items: queue.SimpleQueue = queue.SimpleQueue()
        key, loop, finished = None, None, False
        ticket = object()
        try:
            with self._lock:
                self._waiting.append(ticket)
                self._lock.wait_for(lambda: self._closed or (
                    self._waiting[0] is ticket and len(self._running) < self.max_batch
                    and self._held + need <= self.max_tokens))
                self._waiting.remove(ticket)
                self._lock.notify_all()  # the next in line may fit too
                if self._closed:
                    return
                key = next(self._keys)
                loop = min(self._loops, key=lambda candidate: len(candidate.keys))
                loop.keys.add(key)
                self._running[key] = (items, need)
                self._held += need
            loop.post(("start", key, prompt, cfg, view))
            while True:
                item = items.get()
                if isinstance(item, str) and item == _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Viewed):
                    yield item.data
                    continue
                step = Step.from_wire(item, self.tok) if self.process else item  # from a worker: its wire form
                yield step if view is None else view(step)
        finally:
            with self._lock:
                if ticket in self._waiting:  # closed before its turn came
                    self._waiting.remove(ticket)
                    self._lock.notify_all()
                stop = key is not None and not finished and not self._closed and key in loop.keys
            if stop:  # closed early: the loop ends this sequence after its current step and sends its end
                loop.post(("stop", key))

    def close(self) -> None:
        """Stop the loops; a generation under way ends after its current step, as a stopped one would."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            loops = list(self._loops)
        for loop in loops:
            loop.post(None)
        for loop in loops:
            loop.join()
