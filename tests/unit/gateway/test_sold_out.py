"""The gateway's sold-out memory: answers full without a round trip, but never for a retry."""

from __future__ import annotations

import time

import pytest

from services.gateway.limits import SoldOutCache

pytestmark = pytest.mark.unit


def test_full_is_remembered_per_session_and_channel_until_the_ttl_passes():
    cache = SoldOutCache(ttl=0.2)
    assert not cache.full("s1", "web")
    cache.remember("s1", "web")
    assert cache.full("s1", "web")
    assert not cache.full("s1", "phone") and not cache.full("s2", "web")
    time.sleep(0.25)
    assert not cache.full("s1", "web"), "a slot freed later must become bookable again"


def test_a_forwarded_request_is_known_as_a_retry_and_old_keys_are_forgotten():
    cache = SoldOutCache(remember_keys=2)
    cache.forwarded("p1", "k1")
    assert cache.is_retry("p1", "k1")
    assert not cache.is_retry("p1", "k2") and not cache.is_retry("p2", "k1")
    cache.forwarded("p2", "k2")
    cache.forwarded("p3", "k3")
    assert not cache.is_retry("p1", "k1") and cache.is_retry("p3", "k3")
