"""CPU-heavy calls (password hashing) off the eventlet hub.

argon2 takes tens of milliseconds of CPU per hash; called in a greenlet it would stall every
other request of the process for that long. Under eventlet it runs in eventlet's OS thread pool
(tpool; argon2-cffi releases the GIL), elsewhere it is a plain call.
tests/nameko/test_db_green.py::test_password_hashing_does_not_block_the_hub keeps that true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def off_hub(fn: Callable[..., T], *args: Any) -> T:
    try:
        import eventlet.patcher
        import eventlet.tpool
    except ImportError:
        return fn(*args)
    if eventlet.patcher.is_monkey_patched("thread"):
        return eventlet.tpool.execute(fn, *args)  # type: ignore[no-any-return]
    return fn(*args)
