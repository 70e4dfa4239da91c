"""Health that tells the truth: each fact read from its source, never "the process is alive".

A check answers {"status": "ok" | "degraded", "reason": text or None, ...numbers}; a report is
{"status", "checks": {name: check}}, degraded when any check is. The checks:

- `database`, `eventstore`: `SELECT 1` on the pool the service uses (statement timeout).
- `broker`: a fresh AMQP connection opens.
- `relay`: store head − the relay's checkpoint ('relay' in es_checkpoints), the age of the oldest
  event not yet published, and whether some relay holds its advisory lock (pg_locks); degraded
  when no relay holds it while events wait, or the oldest waits longer than HEALTH_RELAY_LAG_S.
- `projection:<name>`: events of the projection's own types after its checkpoint and the age of
  the oldest (head − checkpoint alone would count events it never applies); degraded when that
  age passes HEALTH_PROJECTION_LAG_S or the runner is waiting out an outage.
- `dead_letters`: a passive queue_declare of each `<queue>.dead` of the service's reliable event
  handlers; degraded above HEALTH_DEAD_LETTERS_MAX parked messages.
- service extras (his_sync's HIS backlog per hospital, notification's SMS backlog).

Every check runs in its own thread (a green thread under nameko) with one shared deadline
(HEALTH_TIMEOUT_S, 0.8 s by default): a check that hangs is reported as degraded ("no answer
within …") and the report still comes back in time. No check reads patient data; reasons are
passed through the log masker all the same.

    python -m infra.health check --service booking     # exit 0 when ok, 1 otherwise (compose)
    python -m infra.health check --service relay
    python -m infra.health show                         # the gateway's /healthz, pretty-printed
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from nameko.extensions import DependencyProvider

from infra import metrics
from infra.db import Database, shared_database
from infra.handling import ReliableEventHandler, dead_queue_name
from infra.logging import get_logger, mask_text
from infra.projections import Projection, ProjectionRunner
from infra.queues import amqp_parameters
from infra.relay import LOCK_KEY
from infra.settings import Settings, load_config, settings_for


class _QuietMissingDeadQueues(logging.Filter):
    """pika logs every passive declare that finds no queue as a warning; for a `.dead` queue that
    only means nothing was ever parked there, asked every METRICS_REFRESH_S."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("NOT_FOUND - no queue" in text and ".dead'" in text)


logging.getLogger("pika.channel").addFilter(_QuietMissingDeadQueues())

Check = dict[str, Any]
Extra = Callable[[Any, Settings, datetime], Check]  # (cursor of the service's database, settings, now)
RELAY = "relay"
_log = get_logger(__name__)


def ok(**numbers: Any) -> Check:
    return {"status": "ok", "reason": None, **numbers}


def degraded(reason: str, **numbers: Any) -> Check:
    return {"status": "degraded", "reason": mask_text(reason)[:500], **numbers}


def run_checks(checks: Mapping[str, Callable[[], Check]], timeout: float) -> dict[str, Check]:
    """Run every check at once; each that has not answered by the deadline is degraded."""
    results: dict[str, Check] = {}

    def run(name: str, fn: Callable[[], Check]) -> None:
        started = time.perf_counter()
        try:
            answer = fn()
        except Exception as exc:  # noqa: BLE001 - a failing check is a degraded check, never a crash
            answer = degraded(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        answer.setdefault("ms", round((time.perf_counter() - started) * 1000, 1))
        results[name] = answer

    threads = [threading.Thread(target=run, args=(name, fn), daemon=True, name=f"health-{name}")
               for name, fn in checks.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return {name: dict(results[name]) if name in results else degraded(f"no answer within {timeout:g} s")
            for name in checks}


def overall(checks: Mapping[str, Check]) -> str:
    return "ok" if all(c.get("status") == "ok" for c in checks.values()) else "degraded"


def reasons(checks: Mapping[str, Check]) -> list[str]:
    return [f"{name}: {c.get('reason')}" for name, c in checks.items() if c.get("status") != "ok"]


# --- the checks -------------------------------------------------------------------------------------

def _ms(timeout: float) -> int:
    return max(1, int(timeout * 1000))


def database_check(db: Database, timeout: float) -> Check:
    with db.transaction() as cur:
        if not db.autocommit:
            cur.execute(f"SET LOCAL statement_timeout = {_ms(timeout)}")
        cur.execute("SELECT 1")
        cur.fetchone()
    return ok()


def broker_check(amqp_uri: str, timeout: float) -> Check:
    conn = _amqp(amqp_uri, timeout)
    conn.close()
    return ok()


def _amqp(amqp_uri: str, timeout: float) -> pika.BlockingConnection:
    return pika.BlockingConnection(amqp_parameters(amqp_uri, timeout))


def relay_check(store_db: Database, lag_s: float, now: datetime) -> Check:
    row = store_db.fetchone(
        "SELECT h.position, coalesce(c.position, 0),"
        " (SELECT recorded_at FROM es_events WHERE position > coalesce(c.position, 0) ORDER BY position LIMIT 1),"
        " EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s"
        "         AND l.objid = %s AND l.objsubid = 1"
        "         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        " FROM es_head h LEFT JOIN es_checkpoints c ON c.name = %s WHERE h.id = 1",
        (LOCK_KEY >> 32, LOCK_KEY & 0xFFFFFFFF, RELAY),
    )
    if row is None:
        return degraded("the event store has no head row")
    head, position, oldest, held = int(row[0]), int(row[1]), row[2], bool(row[3])
    behind = max(0, head - position)
    seconds = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    metrics.RELAY_LAG_EVENTS.labels(service_label()).set(behind)
    numbers = {"head": head, "position": position, "behind": behind, "seconds_behind": round(seconds, 1),
               "lock_held": held}
    if not held and behind:
        return degraded(f"no relay holds the relay lock and {behind} event(s) wait to be published", **numbers)
    if seconds > lag_s:
        return degraded(f"the relay is {behind} event(s) behind, the oldest waiting {seconds:.0f} s "
                        f"(threshold {lag_s:g} s)", **numbers)
    if not held:
        return degraded("no relay holds the relay lock (none is running)", **numbers)
    return ok(**numbers)


def projection_check(projection: Projection, state: str, outage: str | None, lag_s: float, now: datetime,
                     timeout: float) -> Check:
    """The events of the projection's own types after its position (its checkpoint, or how far
    this process has read past events of other types), and the age of the oldest of them."""
    with projection.db.transaction() as cur:
        cur.execute(f"SET LOCAL statement_timeout = {_ms(timeout)}")
        cur.execute("SELECT position FROM projection_checkpoints WHERE name = %s", (projection.name,))
        found = cur.fetchone()
    position = max(int(found[0]) if found else 0, projection.applied)
    types = sorted(projection.projector.types)
    row = projection.store.db.fetchone(  # type: ignore[attr-defined]
        "SELECT h.position,"
        " (SELECT count(*) FROM (SELECT 1 FROM es_events WHERE position > %s AND type = ANY (%s) LIMIT 10001) x),"
        " (SELECT recorded_at FROM es_events WHERE position > %s AND type = ANY (%s) ORDER BY position LIMIT 1)"
        " FROM es_head h WHERE h.id = 1", (position, types, position, types))
    head = int(row[0]) if row else 0
    pending = int(row[1]) if row else 0
    seconds = max(0.0, (now - row[2]).total_seconds()) if row and row[2] is not None else 0.0
    service = service_label()
    metrics.PROJECTION_LAG_EVENTS.labels(service, projection.name).set(pending)
    metrics.PROJECTION_LAG_SECONDS.labels(service, projection.name).set(seconds)
    numbers = {"position": position, "head": head, "pending": pending, "seconds_behind": round(seconds, 1),
               "state": state}
    if state == "retrying":
        return degraded(f"the projection is waiting out an outage: {outage or '?'}", **numbers)
    if seconds > lag_s:
        return degraded(f"{pending} event(s) not applied, the oldest {seconds:.0f} s old "
                        f"(threshold {lag_s:g} s)", **numbers)
    return ok(**numbers)


def dead_letter_counts(connection: Any, queues: Iterable[str]) -> dict[str, int | None]:
    """Parked messages per `.dead` queue (passive declare: nothing is created); None: no such
    queue yet (no message was ever parked there). The broker closes the channel of a passive
    declare that finds nothing, so this uses channels of its own."""
    found: dict[str, int | None] = {}
    channel = connection.channel()
    for name in queues:
        try:
            found[name] = int(channel.queue_declare(queue=name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            found[name] = None
            channel = connection.channel()
    if channel.is_open:
        channel.close()
    return found


def dead_letters_check(amqp_uri: str, queues: Sequence[str], most: int, timeout: float) -> Check:
    conn = _amqp(amqp_uri, timeout)
    try:
        counts = dead_letter_counts(conn, queues)
    finally:
        conn.close()
    service = service_label()
    for name, n in counts.items():
        metrics.DEAD_LETTERS.labels(service, name).set(n or 0)
    parked = {name: n for name, n in counts.items() if n}
    total = sum(parked.values())
    numbers = {"total": total, "queues": parked, "watched": len(counts)}
    if total > most:
        worst = max(parked, key=lambda q: parked[q])
        return degraded(f"{total} message(s) parked in dead-letter queues ({worst}: {parked[worst]}); "
                        f"requeue them on /ops once the cause is fixed", **numbers)
    return ok(**numbers)


# --- a service's report ------------------------------------------------------------------------------

_SERVICE = threading.local()


def service_label() -> str:
    return str(getattr(_SERVICE, "name", None) or os.environ.get("SERVICE_NAME") or "-")


def with_service(name: str, fn: Callable[[], Check]) -> Callable[[], Check]:
    def run() -> Check:
        _SERVICE.name = name
        return fn()
    return run


class HealthChecks(DependencyProvider):
    """The `health` RPC's facts for one nameko service: its database, the event store, the broker,
    the relay, each of its projections, its dead letters, and `extra` checks of its own (each
    `fn(cur, settings, now)` in a transaction of the service's database). While metrics are
    served, the same report runs every METRICS_REFRESH_S to keep the gauges current."""

    def __init__(self, **extra: Extra) -> None:
        self.extra = extra

    def setup(self) -> None:
        cfg = settings_for(self.container)
        self.cfg: Settings = cfg
        self.store_db = shared_database(cfg.eventstore_dsn, cfg.db_pool_size, autocommit=True, idle_s=cfg.db_idle_s)
        self.db = (shared_database(str(cfg.database_dsn), cfg.db_pool_size, idle_s=cfg.db_idle_s)
                   if cfg.database_dsn else None)
        self._stopping = threading.Event()
        # The database checks take turns: each is a few milliseconds, and in parallel they would
        # leave the pools holding a connection per check at rest (the platform's budget is 24).
        self._db_turn = threading.Lock()

    def start(self) -> None:
        if self.cfg.metrics_address:
            self.container.spawn_managed_thread(self._refresh, identifier="health_refresh")

    def stop(self) -> None:
        self._stopping.set()

    def kill(self) -> None:
        self._stopping.set()

    def dead_queues(self) -> list[str]:
        return sorted(dead_queue_name(ep.queue.name) for ep in self.container.entrypoints
                      if isinstance(ep, ReliableEventHandler) and getattr(ep, "queue", None) is not None)

    def runners(self) -> list[ProjectionRunner]:
        return sorted((d for d in self.container.dependencies if isinstance(d, ProjectionRunner)),
                      key=lambda r: r.projection.name)

    def checks(self) -> dict[str, Callable[[], Check]]:
        cfg, now, timeout = self.cfg, datetime.now(UTC), self.cfg.health_timeout_s
        on_db: dict[str, Callable[[], Check]] = {
            "eventstore": lambda: database_check(self.store_db, timeout),
            "relay": lambda: relay_check(self.store_db, cfg.health_relay_lag_s, now),
        }
        if self.db is not None:
            db = self.db
            on_db["database"] = lambda: database_check(db, timeout)
            for name, fn in self.extra.items():
                on_db[name] = _in_transaction(db, fn, cfg, now, timeout)
        for runner in self.runners():
            on_db[f"projection:{runner.projection.name}"] = (
                lambda r=runner: projection_check(r.projection, r.state, r.outage, cfg.health_projection_lag_s,  # type: ignore[misc]
                                                  now, timeout))
        found = {name: _taking_turns(self._db_turn, fn) for name, fn in on_db.items()}
        found["broker"] = lambda: broker_check(cfg.amqp_uri, timeout)
        queues = self.dead_queues()
        if queues:
            found["dead_letters"] = lambda: dead_letters_check(cfg.amqp_uri, queues, cfg.health_dead_letters_max,
                                                               timeout)
        return found

    def report(self) -> dict[str, Any]:
        service = self.container.service_name
        checks = run_checks({k: with_service(service, fn) for k, fn in self.checks().items()},
                            self.cfg.health_timeout_s)
        for name, check in checks.items():
            metrics.HEALTH_OK.labels(service, name).set(1 if check["status"] == "ok" else 0)
        return {"service": service, "status": overall(checks), "checks": checks,
                "metrics_address": metrics.served_address(), "counters": counters(service)}

    def _refresh(self) -> None:
        while not self._stopping.wait(self.cfg.metrics_refresh_s):
            try:
                self.report()
            except Exception:  # noqa: BLE001 - the next tick tries again; the RPC says what is wrong
                _log.warning("health_refresh_failed", exc_info=True)

    def get_dependency(self, worker_ctx: Any) -> HealthChecks:
        return self


def _taking_turns(turn: threading.Lock, fn: Callable[[], Check]) -> Callable[[], Check]:
    """One database check at a time; one that waited 0.2 s for its turn (a check ahead of it
    hangs) runs anyway, so that a hanging check never hides the others' answers."""
    def run() -> Check:
        got = turn.acquire(timeout=0.2)
        try:
            return fn()
        finally:
            if got:
                turn.release()
    return run


def _in_transaction(db: Database, fn: Extra, cfg: Settings, now: datetime, timeout: float) -> Callable[[], Check]:
    def run() -> Check:
        with db.transaction() as cur:
            cur.execute(f"SET LOCAL statement_timeout = {_ms(timeout)}")
            return fn(cur, cfg, now)
    return run


def counters(service: str) -> dict[str, dict[str, float]]:
    """This process's running totals of the service (since it started): events by outcome and
    RPC calls by outcome, for the operator page."""
    out: dict[str, dict[str, float]] = {"events": {}, "rpc": {}}
    for family, key in ((metrics.EVENTS_HANDLED, "events"), (metrics.RPC_TOTAL, "rpc")):
        for collected in family.collect():
            for sample in collected.samples:
                if sample.name.endswith("_total") and sample.labels.get("service") == service:
                    outcome = sample.labels["outcome"]
                    out[key][outcome] = out[key].get(outcome, 0) + sample.value
    return out


# --- the command line: compose health checks ------------------------------------------------------------

def check_service(service: str, amqp_uri: str, timeout: float) -> dict[str, Any]:
    """The `health` RPC of one service (whichever replica answers), through the broker."""
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=timeout) as cluster:
        answer: dict[str, Any] = getattr(cluster, service).health()
        return answer


def check_relay(config: str) -> dict[str, Any]:
    cfg = Settings.model_validate({"SERVICE_NAME": RELAY, **load_config(config)})
    db = Database(cfg.eventstore_dsn, size=1, autocommit=True)
    try:
        checks = run_checks({"eventstore": lambda: database_check(db, cfg.health_timeout_s),
                             "relay": lambda: relay_check(db, cfg.health_relay_lag_s, datetime.now(UTC))},
                            max(cfg.health_timeout_s, 3.0))
    finally:
        db.close()
    return {"service": RELAY, "status": overall(checks), "checks": checks}


def check_gateway(address: str, timeout: float) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=timeout) as resp:
            answer: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:  # 503 carries the degraded report
        answer = json.load(exc)
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["check", "show"])
    parser.add_argument("--service", default="gateway",
                        help="schedule, booking, notification, his_sync, stats, gateway or relay")
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--gateway", default=os.environ.get("GATEWAY_ADDRESS", "127.0.0.1:8000"))
    parser.add_argument("--relay-config", default="infra/relay.yaml")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--quiet", action="store_true", help="print nothing when ok")
    args = parser.parse_args(argv)
    service = "gateway" if args.action == "show" else args.service
    try:
        if service == RELAY:
            answer = check_relay(args.relay_config)
        elif service == "gateway":
            answer = check_gateway(args.gateway, args.timeout)
        else:
            answer = check_service(service, args.amqp, args.timeout)
    except Exception as exc:  # noqa: BLE001 - no answer at all: unhealthy, and say why
        print(f"{service}: no answer ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    healthy = answer.get("status") == "ok"
    if args.action == "show" or not (healthy and args.quiet):
        print(json.dumps(answer, ensure_ascii=False, indent=1, default=str))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
