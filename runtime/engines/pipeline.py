"""A bounded, ordered, threaded pipeline: each stage runs in one or more threads of its own.

The heavy work of every stage runs outside the GIL: the Rust tokenizer (``encode_batch``,
parallel over its own thread pool), onnxruntime's ``run``, numpy's array operations and
pyarrow's Parquet writer. A stage given several workers processes several items at
once (e.g. tokenizing or decoding two chunks while the session runs a third); results
are put back in source order before they reach the consumer. Queues hold at most
``depth`` items between stages and the reorder buffer at most the items in flight, which
bounds memory whatever the input size. An exception in any stage stops the pipeline and
is raised to the consumer. When the consumer stops (an exception, ``close()``), every thread
finishes the item in hand and is joined before the generator returns: no thread is left
inside a native call when the process exits (a stage that can take long, the inference,
must be cancellable: ``Annotator.cancel``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def pipelined(source: Iterable[Any], stages: Sequence[Callable[[Any], Any]], depth: int = 2,
              workers: Sequence[int] | None = None,
              cancel: Callable[[], None] | None = None) -> Generator[Any, None, None]:
    """Yield ``stages[-1](...stages[0](item))`` for each item of ``source``, in order.

    ``workers[k]`` threads run stage ``k`` (default 1 each: a stage that owns a resource,
    such as the inference session, keeps 1). ``cancel`` is called when the pipeline stops
    before its end (an error, an interrupt, ``close()``), before the threads are joined, to cut
    short a long stage call.
    """
    workers = list(workers or [1] * len(stages))
    if len(workers) != len(stages) or min(workers, default=1) < 1:
        raise ValueError(f"workers must give >= 1 thread per stage, found {workers} for {len(stages)} stages")
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=max(depth, w)) for w in [1] + workers]

    def put(q: queue.Queue, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for seq, item in enumerate(source):
                if not put(queues[0], (seq, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(queues[0], (-1, _Failure(exc)))
            return
        put(queues[0], (-1, _DONE))

    def work(fn: Callable[[Any], Any], inbox: queue.Queue, outbox: queue.Queue, finished: list[int],
             lock: threading.Lock, n_workers: int) -> None:
        while not stop.is_set():
            try:
                seq, item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                put(inbox, (seq, item))  # let the other workers of this stage see it
                with lock:
                    finished[0] += 1
                    last = finished[0] == n_workers
                if last:  # the stage's last worker passes the end on, after every result
                    put(outbox, (seq, item))
                return
            if isinstance(item, _Failure):
                put(outbox, (seq, item))
                return
            try:
                result = fn(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                put(outbox, (seq, _Failure(exc)))
                return
            if not put(outbox, (seq, result)):
                return

    threads = [threading.Thread(target=feed, name="tommer-read", daemon=True)]
    for k, (fn, n) in enumerate(zip(stages, workers)):
        finished, lock = [0], threading.Lock()
        threads += [threading.Thread(target=work, args=(fn, queues[k], queues[k + 1], finished, lock, n),
                                     name=f"tommer-stage{k}-{w}", daemon=True) for w in range(n)]
    for t in threads:
        t.start()
    pending: dict[int, Any] = {}
    expected, complete = 0, False
    try:
        while True:
            seq, item = queues[-1].get()
            if isinstance(item, _Failure):
                raise item.exc
            if item is _DONE:
                if pending:  # cannot happen: every result comes before the end
                    raise RuntimeError(f"pipeline ended with {len(pending)} results out of order")
                complete = True
                return
            pending[seq] = item
            while expected in pending:
                yield pending.pop(expected)
                expected += 1
    finally:
        stop.set()  # every thread finishes the item in hand, then leaves; joined in stage order
        if cancel is not None and not complete:
            cancel()
        for t in threads:
            t.join()
