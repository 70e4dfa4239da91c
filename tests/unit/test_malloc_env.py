"""The launcher's malloc setting and infra/blocking's bound on hashes at once keep argon2's 19 MiB
per hash from staying in every thread's arena: booking held 577 MB after 5,000 registrations.
Twenty threads hash three passwords each in a child process, at most SLOTS at once as off_hub
allows; without the setting glibc keeps about 15 MiB per thread (317 MB seen), with it a few
hashes' worth (51 MB)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.blocking import SLOTS
from scripts.launcher import MALLOC_ENV

pytestmark = pytest.mark.unit

_HASH_IN_THREADS = r'''
import sys
import threading
from argon2 import PasswordHasher
ph = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
slots = threading.Semaphore(int(sys.argv[1]))
def work():
    for _ in range(3):
        with slots:
            ph.hash("secret-pw-1")
threads = [threading.Thread(target=work) for _ in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print(int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024)
'''


def _rss_mb(extra: dict[str, str]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra
    out = subprocess.run([sys.executable, "-c", _HASH_IN_THREADS, str(SLOTS)], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.strip())


def test_argon2_in_many_threads_gives_its_memory_back_under_the_launchers_malloc_settings():
    with_settings, without = _rss_mb(MALLOC_ENV), _rss_mb({})
    print(f"RSS after 60 hashes in 20 threads: {without} MB without, {with_settings} MB with {MALLOC_ENV}")
    assert with_settings < 120, with_settings  # the interpreter and a few hashes' worth
    assert without > 2 * with_settings  # the setting is what makes the difference on this glibc
