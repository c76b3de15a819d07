"""Run the contract tests through the asyncio API: :class:`Bridged` wraps an
:class:`janus.aio.AsyncJanus` (and its workers) living on one background event loop, so a
test written as ``jn.submit(...)`` awaits ``AsyncJanus.submit`` and waits for its result.

What a test reads raw (``jn.store`` for a Coordinator, key inspection) is a sync
:class:`janus.Janus` twin with the same prefix and clock: the state is the same Redis's.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from janus.aio import AsyncJanus
from janus.client import Janus

T = TypeVar("T")


class Loop:
    """One event loop on a daemon thread; ``run(coro)`` blocks until the coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="aio")
        self.thread.start()
        self.opened: list[AsyncJanus] = []  # closed by close_opened (after each test)

    def close_opened(self) -> None:
        opened, self.opened = self.opened, []
        for jn in opened:
            self.run(jn.close())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Bridged:
    """Sync calls onto an asyncio object: coroutine methods are run on ``loop``."""

    def __init__(self, target: object, loop: Loop, twin: object | None = None) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)
        object.__setattr__(self, "_twin", twin)

    def __getattr__(self, name: str) -> Any:
        target, loop, twin = self._target, self._loop, self._twin
        if name == "store" and twin is not None:
            return twin.store  # type: ignore[attr-defined]
        attr = getattr(target, name)
        if name == "worker":
            return lambda *a, **k: Bridged(attr(*a, **k), loop)
        if name == "run" and inspect.iscoroutinefunction(attr):
            # Worker.run(handler, ...): stop() is thread-safe; the run blocks like the sync one.
            return lambda *a, **k: loop.run(attr(*a, **k), timeout=None)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: loop.run(attr(*a, **k))
        return attr

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._target, name, value)
        if self._twin is not None:
            setattr(self._twin, name, value)


def bridged_janus(loop: Loop, sync: Janus, url: str, prefix: str, **kwargs: Any) -> Bridged:
    """An AsyncJanus on ``url``/``prefix`` behind a sync face; ``sync`` serves raw reads."""

    async def make() -> AsyncJanus:
        return await AsyncJanus.from_url(url, prefix=prefix, **kwargs)

    jn = loop.run(make())
    jn._clock = sync._clock
    loop.opened.append(jn)
    return Bridged(jn, loop, sync)
