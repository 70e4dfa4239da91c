"""gateway: the platform's health and the operator's endpoints (a mixin of GatewayService, as
sms_api is). `/healthz` (for the orchestrator and the launcher) and `/api/v1/ops/*` (for the /ops
page, platform_admin only) both aggregate every service's `health` RPC (infra.health) with the
gateway's own checks; the dead-letter list and requeue use infra.deadletters on the gateway's
broker connection. Nothing here reads patient data: a parked message is shown as its type, ids
and masked error, never its data."""

from __future__ import annotations

import re
import time
from typing import Any

import eventlet
import pika
import pika.exceptions
from werkzeug.wrappers import Request, Response

from contracts import InvalidInput, NotFound
from infra import deadletters, metrics
from infra.health import HealthChecks, degraded, reasons
from infra.queues import amqp_parameters
from services.gateway.api import api, json_response
from services.gateway.auth import Principal, Role

SERVICES = ("schedule", "booking", "notification", "his_sync", "stats")
HEALTH_WAIT_S = 2.5  # each service answers within its HEALTH_TIMEOUT_S (0.8 s); this allows for the broker
OPERATORS: tuple[Role, ...] = ("platform_admin",)
# A dead-letter queue of a reliable event handler: evt-<source>-<EventType>--<service>.<method>.dead
DEAD_QUEUE = re.compile(r"^evt-[a-z_]+-[A-Za-z]+--[a-z_]+\.[a-z_]+\.dead$")
PEEK = 5


class OpsEndpoints:
    checks: HealthChecks  # declared on GatewayService
    settings: Any

    def platform_health(self) -> dict[str, Any]:
        """Every service's health report (asked at once, waited for HEALTH_WAIT_S at most) and the
        gateway's own, summed up: the shape of /healthz."""
        pending: dict[str, Any] = {}
        answers: dict[str, dict[str, Any]] = {}
        for name in SERVICES:
            try:
                pending[name] = getattr(self, name).health.call_async()
            except Exception as exc:  # noqa: BLE001 - the broker refused the call: that service is down
                answers[name] = _down(f"{type(exc).__name__}: {exc}")
        answers["gateway"] = self.checks.report()
        deadline = time.monotonic() + HEALTH_WAIT_S
        for name, reply in pending.items():
            try:
                with eventlet.Timeout(max(0.05, deadline - time.monotonic())):
                    answers[name] = reply.result()
            except eventlet.Timeout:
                answers[name] = _down(f"no answer within {HEALTH_WAIT_S:g} s")
            except Exception as exc:  # noqa: BLE001 - a RemoteError: the service is there but its health failed
                answers[name] = _down(f"{type(exc).__name__}: {str(exc)[:200]}")
        return summarise(answers)

    @api("GET", "/healthz", "health of the gateway and the services behind it", "development", limit=None)
    def healthz(self, request: Request) -> Response:
        """Public (the orchestrator, a load balancer): the summary without each service's full
        report, which names processes' addresses; the platform admin reads that on /ops."""
        health = self.platform_health()
        health.pop("details")
        return json_response(health, 200 if health["status"] == "ok" else 503)

    @api("GET", "/api/v1/ops/health", "the platform's health: each service's checks, the relay, projection lag, "
         "dead letters, the HIS and SMS backlogs, and this gateway's request counts", "operations", roles=OPERATORS)
    def ops_health(self, request: Request, principal: Principal) -> Response:
        return json_response({**self.platform_health(), "gateway_requests": gateway_requests()})

    @api("GET", "/api/v1/ops/dead-letters", "every dead-letter queue holding messages, with its first messages "
         "(type, event id, masked error; never the event's data)", "operations", roles=OPERATORS)
    def ops_dead_letters(self, request: Request, principal: Principal) -> Response:
        health = self.platform_health()
        queues = []
        conn = _connect(self.settings.amqp_uri)
        try:
            for name, count in sorted(health["dead_letters"]["queues"].items()):
                channel = conn.channel()
                try:
                    first = [deadletters.summary(m) for m in deadletters.peek(channel, name, PEEK)]
                finally:
                    if channel.is_open:
                        channel.close()
                queues.append({"queue": name, "service": _service_of(name), "count": count, "messages": first})
        finally:
            conn.close()
        return json_response({"queues": queues, "total": sum(q["count"] for q in queues)})

    @api("POST", "/api/v1/ops/dead-letters/<string:queue>/requeue", "move a dead-letter queue's messages back to "
         "their queue for another try (as many as were parked when asked)", "operations", roles=OPERATORS,
         path_help={"queue": "the .dead queue, e.g. evt-booking-AppointmentBooked--notification.confirm_booking.dead"})
    def ops_requeue(self, request: Request, principal: Principal, queue: str) -> Response:
        if not DEAD_QUEUE.match(queue):
            raise InvalidInput("不是死信队列 / not a dead-letter queue of an event handler", field="queue")
        conn = _connect(self.settings.amqp_uri)
        try:
            try:
                moved = deadletters.requeue(conn.channel(), queue)
            except pika.exceptions.ChannelClosedByBroker:
                raise NotFound("没有这个死信队列 / no such dead-letter queue", field="queue") from None
        finally:
            conn.close()
        self.log.warning("dead_letters_requeued", queue=queue, moved=moved, actor=principal.subject)  # type: ignore[attr-defined]
        return json_response({"queue": queue, "moved": moved})


def summarise(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """/healthz: {status, services: {name: ok|degraded|down}, reasons, relay, projections,
    dead_letters, backlogs, details (each service's report)}."""
    services = {name: ("down" if a.get("down") else a.get("status", "degraded")) for name, a in answers.items()}
    why = [f"{name}: {r}" for name, a in answers.items() for r in reasons(a.get("checks", {}))]
    projections: dict[str, Any] = {}
    dead: dict[str, int] = {}
    backlogs: dict[str, Any] = {}
    for answer in answers.values():
        checks = answer.get("checks", {})
        for check, found in checks.items():
            if check.startswith("projection:"):
                projections[check.split(":", 1)[1]] = {k: found.get(k) for k in
                                                       ("status", "reason", "pending", "seconds_behind", "state")}
        dead.update(checks.get("dead_letters", {}).get("queues", {}))
        if "his_backlog" in checks:
            backlogs["his"] = checks["his_backlog"]
        if "sms_backlog" in checks:
            backlogs["sms"] = checks["sms_backlog"]
    # Every service reads the relay's state from the same store: the gateway's answer, else any.
    relay = next((a["checks"]["relay"] for n, a in sorted(answers.items(), key=lambda kv: kv[0] != "gateway")
                  if "relay" in a.get("checks", {})), degraded("no service answered with the relay's state"))
    return {"status": "ok" if all(s == "ok" for s in services.values()) else "degraded",
            "services": services, "reasons": why, "relay": relay, "projections": projections,
            "dead_letters": {"total": sum(dead.values()), "queues": dead}, "backlogs": backlogs,
            "details": answers}


def gateway_requests() -> dict[str, Any]:
    """This gateway process's answers since it started, by status class, and the busiest routes."""
    by_class: dict[str, float] = {}
    routes: dict[str, float] = {}
    for family in metrics.HTTP_REQUESTS.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total") or sample.labels.get("service") != "gateway":
                continue
            cls = sample.labels["status"][:1] + "xx"
            by_class[cls] = by_class.get(cls, 0) + sample.value
            key = f"{sample.labels['method']} {sample.labels['route']}"
            routes[key] = routes.get(key, 0) + sample.value
    top = sorted(routes.items(), key=lambda kv: -kv[1])[:10]
    return {"by_status": by_class, "top_routes": [{"route": r, "count": n} for r, n in top],
            "metrics_address": metrics.served_address()}


def _down(reason: str) -> dict[str, Any]:
    return {"status": "degraded", "down": True, "checks": {"rpc": degraded(reason)}}


def _service_of(queue: str) -> str:
    return queue.split("--", 1)[1].split(".", 1)[0] if "--" in queue else "?"


def _connect(amqp_uri: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(amqp_parameters(amqp_uri, 5))
