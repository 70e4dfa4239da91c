"""The launcher's malloc settings keep argon2's 19 MiB per hash from staying in every thread's arena
(scripts/launcher.py MALLOC_ENV): booking held 577 MB after 5,000 registrations without them.
Twenty threads hash three passwords each in a child process; without the settings glibc keeps
about 17 MiB per thread (336 MB seen), with them the memory is given back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts.launcher import MALLOC_ENV

pytestmark = pytest.mark.unit

_HASH_IN_THREADS = r'''
import threading
from argon2 import PasswordHasher
ph = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
def work():
    for _ in range(3):
        ph.hash("secret-pw-1")
threads = [threading.Thread(target=work) for _ in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print(int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024)
'''


def _rss_mb(extra: dict[str, str]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra
    out = subprocess.run([sys.executable, "-c", _HASH_IN_THREADS], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.strip())


def test_argon2_in_many_threads_gives_its_memory_back_under_the_launchers_malloc_settings():
    with_settings, without = _rss_mb(MALLOC_ENV), _rss_mb({})
    print(f"RSS after 60 hashes in 20 threads: {without} MB without, {with_settings} MB with {MALLOC_ENV}")
    assert with_settings < 19 * 4, with_settings  # at most a few hashes' worth kept
    assert without > with_settings  # the settings are what makes the difference on this glibc
