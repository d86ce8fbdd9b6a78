"""A bounded, ordered, threaded pipeline: each stage runs in its own thread.

onnxruntime and the Rust tokenizer release the GIL, so reading and tokenizing the
next chunk and decoding the previous one overlap with ``session.run``. Queues hold
at most ``depth`` items between stages, which bounds memory whatever the input size.
An exception in any stage stops the pipeline and is raised to the consumer.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def pipelined(source: Iterable[Any], stages: list[Callable[[Any], Any]], depth: int = 2) -> Iterator[Any]:
    """Yield ``stages[-1](...stages[0](item))`` for each item of ``source``, in order."""
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]

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
            for item in source:
                if not put(queues[0], item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(queues[0], _Failure(exc))
            return
        put(queues[0], _DONE)

    def work(fn: Callable[[Any], Any], inbox: queue.Queue, outbox: queue.Queue) -> None:
        while not stop.is_set():
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE or isinstance(item, _Failure):
                put(outbox, item)
                return
            try:
                result = fn(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                put(outbox, _Failure(exc))
                return
            if not put(outbox, result):
                return

    threads = [threading.Thread(target=feed, name="tommer-read", daemon=True)]
    threads += [threading.Thread(target=work, args=(fn, queues[i], queues[i + 1]), name=f"tommer-stage{i}", daemon=True)
                for i, fn in enumerate(stages)]
    for t in threads:
        t.start()
    try:
        while True:
            item = queues[-1].get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
