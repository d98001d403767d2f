"""Server-sent events: the job queue's worker thread publishes, each open page receives.

``publish`` may be called from any thread; each subscriber is an ``asyncio.Queue`` on the event
loop that serves its connection, fed with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

# A comment line this often keeps proxies and the browser from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


class Broadcaster:
    """Fans events (JSON-able dicts) out to every subscribed stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any] | None]]] = set()

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that loop has closed: its stream is gone
                self._drop(loop, queue)

    def close(self) -> None:
        """End every open stream (the app is shutting down)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:
                pass

    async def stream(self, first: Callable[[], dict[str, Any]]) -> AsyncIterator[str]:
        """The event ``first()`` makes, then every published event, as SSE ``data:`` lines, until closed.

        ``first`` runs after subscribing, so no event falls between it and the stream (one may come twice).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        with self._lock:
            self._subscribers.add((loop, queue))
        try:
            yield _format(first())
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if event is None:
                    return
                yield _format(event)
        finally:
            self._drop(loop, queue)

    def _drop(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            self._subscribers.discard((loop, queue))


def _format(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
