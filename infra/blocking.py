"""CPU-heavy calls (password hashing) off the eventlet hub.

argon2 takes tens of milliseconds of CPU per hash; called in a greenlet it would stall every
other request of the process for that long. Under eventlet it runs in eventlet's OS thread pool
(tpool; argon2-cffi releases the GIL), elsewhere it is a plain call.
tests/nameko/test_db_green.py::test_password_hashing_does_not_block_the_hub keeps that true.

At most `SLOTS` (the machine's cores) such calls run at once per process; the others wait on the
hub. More hashes at once than cores gain nothing, and each holds argon2's 19 MiB: twenty tpool
threads hashing at once left booking at 577 MB after the flash crowd's 5,000 registrations, the
memory kept in each thread's malloc arena (with the launcher's MALLOC_ARENA_MAX=2 and this
bound, 60 hashes in 20 threads end at 51 MB instead of 317: tests/unit/test_malloc_env.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
SLOTS = max(2, os.cpu_count() or 2)
_slots: Any = None  # an eventlet semaphore, made on the first call under monkey patching


def off_hub(fn: Callable[..., T], *args: Any) -> T:
    try:
        import eventlet.patcher
        import eventlet.tpool
    except ImportError:
        return fn(*args)
    if eventlet.patcher.is_monkey_patched("thread"):
        global _slots
        if _slots is None:
            import eventlet.semaphore
            _slots = eventlet.semaphore.Semaphore(SLOTS)
        with _slots:
            return eventlet.tpool.execute(fn, *args)  # type: ignore[no-any-return]
    return fn(*args)
