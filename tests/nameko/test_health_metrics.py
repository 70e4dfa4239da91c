"""infra.health and infra.metrics inside real nameko containers, monkey-patched as `nameko run` is
(issue 14): prometheus_client's HTTP server (a thread, green here) answers without stalling the
hub; the health RPC counts a parked message from the broker itself, says no relay holds the lock,
and answers in time while one of its checks hangs."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import eventlet
import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook

from infra import metrics
from infra.handling import dead_queue_name, reliable_event_handler
from infra.health import HealthChecks, ok
from infra.metrics import Metrics
from infra.providers import ServiceDatabase, Store
from tests.nameko.test_handling import SOURCE, handler_queue, thing

pytestmark = pytest.mark.integration


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_the_metrics_server_answers_under_monkey_patching_without_blocking_the_hub() -> None:
    assert eventlet.patcher.is_monkey_patched("thread")
    bound = metrics.serve("127.0.0.1:0")
    assert bound is not None and bound[1] > 0
    assert metrics.serve("127.0.0.1:0") == bound  # once per process
    address = f"{bound[0]}:{bound[1]}"
    metrics.event_handled("metrics_probe", "q.test", "ok")
    ticks: list[float] = []

    def ticker() -> None:
        for _ in range(20):
            ticks.append(time.monotonic())
            eventlet.sleep(0.01)

    runner = eventlet.spawn(ticker)
    bodies = [eventlet.spawn(scrape, address) for _ in range(5)]
    texts = [b.wait() for b in bodies]
    runner.wait()
    assert all('appt_events_handled_total{outcome="ok",queue="q.test",service="metrics_probe"} 1.0' in t for t in texts)
    assert len(ticks) == 20 and max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.5


def test_health_counts_a_parked_message_and_answers_while_a_check_hangs(
        container_factory, rabbit_config, broker, unique_name, wait_for) -> None:
    def hangs(cur: Any, cfg: Any, now: Any) -> dict[str, Any]:
        time.sleep(5)  # green: a HIS, a lock, anything that does not answer
        return ok()

    class Watched:
        name = unique_name("watched")
        db = ServiceDatabase()
        store = Store()
        metrics = Metrics()
        checks = HealthChecks(stuck=hangs)

        @reliable_event_handler(SOURCE, "ThingHappened")
        def handle(self, payload: dict[str, Any]) -> None:
            raise ValueError("poison")

        @rpc
        def health(self) -> dict[str, Any]:
            return self.checks.report()

    config = {**rabbit_config, "HEALTH_TIMEOUT_S": 0.5, "METRICS_ADDRESS": "127.0.0.1:0"}
    container = container_factory(Watched, config)
    container.start()
    queue = handler_queue(Watched.name)
    broker.publish_event(SOURCE, thing())
    wait_for(lambda: broker.count(dead_queue_name(queue)) == 1, 30, "the event to be parked")

    with entrypoint_hook(container, "health") as health:
        started = time.monotonic()
        report = health()
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the health RPC took {elapsed:.2f} s"
    checks = report["checks"]
    assert report["status"] == "degraded"
    assert checks["stuck"] == {"status": "degraded", "reason": "no answer within 0.5 s"}
    assert checks["dead_letters"]["status"] == "degraded"
    assert checks["dead_letters"]["total"] == 1 and checks["dead_letters"]["queues"] == {dead_queue_name(queue): 1}
    assert {n: checks[n]["status"] for n in ("database", "eventstore", "broker")} == dict.fromkeys(
        ("database", "eventstore", "broker"), "ok"), checks
    assert checks["relay"]["lock_held"] is False and checks["relay"]["status"] == "degraded"
    assert report["counters"]["events"] == {"retry": 2.0, "parked": 1.0}  # RETRY_ATTEMPTS = 3
    text = scrape(report["metrics_address"])
    assert f'appt_dead_letters{{queue="{dead_queue_name(queue)}",service="{Watched.name}"}} 1.0' in text
    assert f'appt_health_ok{{check="stuck",service="{Watched.name}"}} 0.0' in text
    assert f'appt_rpc_total{{method="health",outcome="ok",service="{Watched.name}"}} 1.0' in text
