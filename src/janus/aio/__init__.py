"""The asyncio API: :class:`AsyncJanus` and :class:`AsyncWorker`, the same calls, decisions
and errors as :class:`janus.Janus` and :class:`janus.worker.Worker`, awaited.

    jn = await AsyncJanus.from_url("redis://localhost:6379/0")
    decision = await jn.submit("payments", scope="tenant-a", payload=b"...")

Both APIs share one pure call layer (:mod:`janus.calls`) and the same input checks
(:class:`janus.client.ClientCore`, :class:`janus.worker.WorkerCore`); only the sending
differs (:class:`AsyncStore`: many concurrent calls share one round trip).
"""

from janus.aio.client import AsyncJanus
from janus.aio.store import AsyncStore
from janus.aio.worker import AsyncWorker

__all__ = ["AsyncJanus", "AsyncStore", "AsyncWorker"]
