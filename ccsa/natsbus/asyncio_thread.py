"""A private asyncio event loop on its own thread, driven from trio (for nats-py).

Why a dedicated thread and not trio-asyncio: nats-py is asyncio-only (it owns asyncio Tasks for
reading, flushing, pinging and reconnecting). A private thread running a plain asyncio loop keeps
the two worlds rigidly separate, needs no extra dependency, cannot be disturbed by trio's
cancellation inside nats-py's internals, and a stuck NATS socket can never stall the trio loop.
The hand-over is a ``concurrent.futures.Future`` from ``asyncio.run_coroutine_threadsafe``
whose done-callback wakes the waiting trio task with ``TrioToken.run_sync_soon``: no trio
worker thread is parked per call, so thousands of publishes per second cost no threads.
Used by ``ccsa.natsbus.publisher`` and the stand-in's NATS consumer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import trio

__all__ = ["AsyncioThread"]

T = TypeVar("T")


class AsyncioThread:
    """A private asyncio event loop on a daemon thread, driven from trio.

    ``await call(coro)`` runs ``coro`` on that loop; the trio task sleeps until a done-callback
    wakes it through ``TrioToken.run_sync_soon``. Cancelling the trio task cancels the coroutine.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name=self.name, daemon=True)
        self._thread.start()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result; ``trio.TooSlowError`` after
        ``timeout`` seconds (the coroutine is cancelled)."""
        if self.loop is None:
            coro.close()
            raise RuntimeError(f"{self.name}: asyncio thread is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: concurrent.futures.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(wake)
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    async def stop(self) -> None:
        """Stop the loop (pending tasks are cancelled) and join the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)
        self.loop = self._thread = None
