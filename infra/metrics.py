"""Prometheus metrics of every process (prometheus_client), served on METRICS_ADDRESS.

One registry per process (prometheus_client's default); every series carries the `service`
label, so several nameko containers in one process (the interface tests) stay apart. What is
counted, and where:

- `appt_http_requests_total{service,route,method,status}` and `appt_http_request_seconds`: every
  @http entrypoint (the gateway's pages and API, his_sync's HIS endpoints), by route *rule*
  (`/api/v1/appointments/<string:appointment_id>`), never the concrete path: bounded labels, no ids.
- `appt_rpc_seconds{service,method}` / `appt_rpc_total{service,method,outcome}`: every @rpc
  entrypoint as the serving service sees it (worker start to answer); outcome ok / refused (a typed
  DomainError answer) / error.
- `appt_events_handled_total{service,queue,outcome}`: reliable event handlers, ok / retry / parked
  (infra.handling).
- gauges set by infra.health whenever it runs (the health RPC, and every METRICS_REFRESH_S while
  metrics are served): `appt_dead_letters{queue}`, `appt_projection_lag_events{projection}`,
  `appt_projection_lag_seconds{projection}`, `appt_relay_lag_events`, `appt_his_backlog{hospital_id,state}`,
  `appt_sms_backlog{state}`, `appt_health_ok{check}`.

`serve(address)` starts prometheus_client's own HTTP server (a daemon thread; a green thread
under eventlet's monkey patching, tests/nameko/test_health_metrics.py keeps that true) once per
process. METRICS_ADDRESS "" (the default) serves nothing; "127.0.0.1:0" an ephemeral port.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from nameko.extensions import DependencyProvider
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from infra.logging import get_logger
from infra.settings import settings_for

_log = get_logger(__name__)

HTTP_REQUESTS = Counter("appt_http_requests", "HTTP requests answered, by route rule and status",
                        ["service", "route", "method", "status"])
HTTP_SECONDS = Histogram("appt_http_request_seconds", "HTTP request duration", ["service", "route", "method"])
RPC_SECONDS = Histogram("appt_rpc_seconds", "RPC handling time in the serving service", ["service", "method"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
RPC_TOTAL = Counter("appt_rpc", "RPC calls answered, by outcome (ok, refused, error)", ["service", "method", "outcome"])
EVENTS_HANDLED = Counter("appt_events_handled", "event deliveries by outcome (ok, retry, parked)",
                         ["service", "queue", "outcome"])
DEAD_LETTERS = Gauge("appt_dead_letters", "messages parked in a .dead queue", ["service", "queue"])
PROJECTION_LAG_EVENTS = Gauge("appt_projection_lag_events", "events of its types the projection has not applied",
                              ["service", "projection"])
PROJECTION_LAG_SECONDS = Gauge("appt_projection_lag_seconds", "age of the oldest event the projection has not applied",
                               ["service", "projection"])
RELAY_LAG_EVENTS = Gauge("appt_relay_lag_events", "store head minus the relay's checkpoint", ["service"])
RELAY_PUBLISHED = Counter("appt_relay_published", "events the relay published (broker-confirmed)", ["service"])
HIS_BACKLOG = Gauge("appt_his_backlog", "HL7 messages not acknowledged, per hospital (waiting, parked)",
                    ["service", "hospital_id", "state"])
SMS_BACKLOG = Gauge("appt_sms_backlog", "SMS not sent yet (waiting) or given up (parked)", ["service", "state"])
HEALTH_OK = Gauge("appt_health_ok", "1 when the check is ok, 0 when degraded", ["service", "check"])

_served: dict[str, tuple[str, int]] = {}
_serve_lock = threading.Lock()


def parse_address(address: str) -> tuple[str, int] | None:
    """"host:port" → (host, port); "" → None (metrics off)."""
    address = address.strip()
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return (host or "127.0.0.1", int(port))


def serve(address: str) -> tuple[str, int] | None:
    """Serve /metrics on `address` once per process; answers the bound (host, port), or None."""
    parsed = parse_address(address)
    if parsed is None:
        return None
    with _serve_lock:
        if "bound" not in _served:
            try:
                server, _thread = start_http_server(parsed[1], addr=parsed[0])
            except OSError as exc:  # a taken port must not keep the service from running
                _log.error("metrics_not_served", address=address, error=str(exc))
                return None
            _served["bound"] = (parsed[0], int(server.server_address[1]))
            _log.info("metrics_serving", address=f"{_served['bound'][0]}:{_served['bound'][1]}")
        return _served["bound"]


def served_address() -> str | None:
    bound = _served.get("bound")
    return f"{bound[0]}:{bound[1]}" if bound else None


def event_handled(service: str, queue: str, outcome: str) -> None:
    EVENTS_HANDLED.labels(service, queue, outcome).inc()


class Metrics(DependencyProvider):
    """Starts the process's /metrics server (METRICS_ADDRESS) and times every RPC and HTTP
    entrypoint of its container. Declare it once on a service class: `metrics = Metrics()`."""

    def setup(self) -> None:
        self.address = serve(settings_for(self.container).metrics_address or "")
        self._started: dict[Any, float] = {}

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = self._started.pop(worker_ctx, None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        entrypoint = worker_ctx.entrypoint
        service = self.container.service_name
        kind = type(entrypoint).__name__
        if kind == "Rpc":
            outcome = "error" if exc_info is not None else (
                "refused" if isinstance(result, dict) and "domain_error" in result else "ok")
            RPC_SECONDS.labels(service, entrypoint.method_name).observe(elapsed)
            RPC_TOTAL.labels(service, entrypoint.method_name, outcome).inc()
        elif hasattr(entrypoint, "url") and hasattr(entrypoint, "method"):  # nameko's HttpRequestHandler
            status = getattr(result, "status_code", 500 if exc_info is not None else 200)
            HTTP_REQUESTS.labels(service, entrypoint.url, entrypoint.method, str(status)).inc()
            HTTP_SECONDS.labels(service, entrypoint.url, entrypoint.method).observe(elapsed)

    def get_dependency(self, worker_ctx: Any) -> str | None:
        return served_address()
