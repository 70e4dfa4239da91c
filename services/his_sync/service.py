"""his_sync: the nameko class. Its reactions come from handlers.APP (they queue messages); the
`HisDispatcher` provider sends them, one dispatcher thread per hospital with due messages; the
`HisListener` provider takes messages from the hospitals' HIS over MLLP (HIS_LISTEN_PORT)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.web.handlers import http
from pydantic import Field
from werkzeug.wrappers import Request, Response

from contracts import Actor, DomainError, InvalidInput, to_wire
from infra.application import bind_reactions
from infra.db import Database, shared_database
from infra.health import Check, HealthChecks, degraded, ok, service_label
from infra.logging import get_logger
from infra.metrics import HIS_BACKLOG, Metrics
from infra.pii import PiiVault
from infra.providers import Clock, LogContext, ServiceDatabase, SettingsProvider, Store, Vault, contract
from infra.rpc import RpcProxy, rpc
from infra.settings import Settings, settings_for
from services.his_sync import handlers, readmodel
from services.his_sync.handlers import APP
from services.his_sync.mllp import FrameDecoder, MllpClient, encode_frame

# Hebei's clock for MSH-7 / EVN-2 (hl7 writes every time as +0800 anyway).
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
_log = get_logger(__name__)


class HisSettings(Settings):
    # The HIS a newly registered hospital is connected to (development: the simulator); empty: none,
    # each hospital's endpoint is set by the platform admin (PUT /api/v1/hospitals/<id>/his).
    his_host: str = Field(default="", alias="HIS_HOST")
    his_port: int = Field(default=2575, ge=1, le=65535, alias="HIS_PORT")
    his_timeout: float = Field(default=5.0, gt=0, alias="HIS_TIMEOUT")
    his_listen_port: int = Field(default=0, ge=0, le=65535, alias="HIS_LISTEN_PORT")  # 0: no listener
    his_max_attempts: int = Field(default=5, ge=1, le=100, alias="HIS_MAX_ATTEMPTS")
    his_retry_base_s: float = Field(default=2.0, gt=0, alias="HIS_RETRY_BASE_S")
    his_breaker_max_s: float = Field(default=10.0, gt=0, alias="HIS_BREAKER_MAX_S")
    schedule_service: str = Field(default="schedule", alias="SCHEDULE_SERVICE")

    def delivery(self) -> handlers.Delivery:
        return handlers.Delivery(max_attempts=self.his_max_attempts, base_delay_s=self.his_retry_base_s,
                                 breaker_max_s=self.his_breaker_max_s)


def connect_his(timeout: float) -> handlers.ConnectHis:
    def connect(endpoint: dict[str, Any]) -> MllpClient:
        return MllpClient(endpoint["host"], int(endpoint["port"]), timeout=timeout,
                          encoding=handlers.facility_of(endpoint).encoding)
    return connect


class HisDispatcher(DependencyProvider):
    """Every half second, a dispatcher thread (a greenlet under nameko) for each hospital with
    due messages that has none running: hospitals are drained side by side, so a down or slow
    HIS delays only its own messages. The lease in the database keeps replicas from draining one
    hospital at once."""

    def setup(self) -> None:
        cfg: HisSettings = settings_for(self.container, HisSettings)
        self.settings = cfg
        self.db: Database = shared_database(str(cfg.database_dsn), cfg.db_pool_size, idle_s=cfg.db_idle_s)
        self.vault = PiiVault.from_config(cfg.pii_key, cfg.pii_old_keys)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, threading.Thread] = {}
        self.stopping = False
        self.connect = connect_his(cfg.his_timeout)

    def start(self) -> None:
        self.container.spawn_managed_thread(self._supervise, identifier="his_dispatcher")

    def stop(self) -> None:
        self.stopping = True

    def kill(self) -> None:
        self.stopping = True

    def _supervise(self) -> None:
        outage: str | None = None  # logged once when it starts and once when it is over
        while not self.stopping:
            try:
                with self.db.transaction() as cur:
                    due = readmodel.HIS_OUTBOX.due_hospitals(cur, datetime.now(HOSPITAL_TZ))
                if outage is not None:
                    _log.warning("his_dispatcher_recovered", outage=outage)
                    outage = None
                for hospital_id in due:
                    thread = self.running.get(hospital_id)
                    if thread is None or not thread.is_alive():
                        worker = threading.Thread(target=self._drain, args=(hospital_id,), daemon=True,
                                                  name=f"his-{hospital_id}")
                        self.running[hospital_id] = worker
                        worker.start()
            except Exception as exc:  # noqa: BLE001 - a lost database is waited out, the loop goes on
                if outage is None:
                    outage = type(exc).__name__
                    _log.warning("his_dispatcher_waiting", error=outage)
                time.sleep(2)
            time.sleep(0.5)

    def _drain(self, hospital_id: str) -> None:
        """Slice after slice while the hospital's messages keep coming (no pause between them); a
        slice that sent nothing (nothing due, the breaker open, another replica's lease) ends it."""
        try:
            while not self.stopping and handlers.drain(
                    hospital_id, self.owner, self.db, self.vault, readmodel.HIS_OUTBOX, readmodel.HIS_ENDPOINTS,
                    self.connect, lambda: datetime.now(HOSPITAL_TZ), self.settings.delivery(),
                    stopping=lambda: self.stopping):
                pass
        except Exception:  # noqa: BLE001 - logged; the supervisor starts a new one on the next tick
            _log.exception("his_drain_failed", hospital_id=hospital_id)


class HisListener(DependencyProvider):
    """MLLP from the hospitals' HIS on HIS_LISTEN_PORT (SO_REUSEPORT: every replica listens, the
    kernel spreads the connections). Each message is answered with the ACK handlers.receive gives."""

    def setup(self) -> None:
        cfg: HisSettings = settings_for(self.container, HisSettings)
        self.settings = cfg
        self.db: Database = shared_database(str(cfg.database_dsn), cfg.db_pool_size, idle_s=cfg.db_idle_s)
        self.server: socket.socket | None = None
        self.lock = threading.Lock()
        self.proxy: Any = None
        self.rpc: Any = None

    def start(self) -> None:
        port = self.settings.his_listen_port
        if not port:
            return
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        server.bind(("0.0.0.0", port))  # noqa: S104 - the hospitals' HIS connect from their networks
        server.listen(64)
        self.server = server
        self.proxy = ClusterRpcProxy(dict(self.container.config))
        self.rpc = self.proxy.start()
        self.container.spawn_managed_thread(self._accept, identifier="his_listener")
        _log.info("his_listening", port=port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def kill(self) -> None:
        self.stop()

    def _accept(self) -> None:
        while self.server is not None:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.container.spawn_managed_thread(lambda c=conn: self._serve(c), identifier="his_connection")

    def _serve(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        with conn:
            conn.settimeout(300)
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                for message in decoder.feed(chunk):
                    with self.lock:  # the standalone RPC proxy takes one call at a time
                        answer = handlers.receive(message, self.db, readmodel.HIS_ENDPOINTS, readmodel.HIS_INBOUND,
                                                  getattr(self.rpc, self.settings.schedule_service),
                                                  datetime.now(HOSPITAL_TZ))
                    conn.sendall(encode_frame(answer))


class DefaultHis(DependencyProvider):
    """(HIS_HOST, HIS_PORT) for a newly registered hospital, or None."""

    def setup(self) -> None:
        cfg: HisSettings = settings_for(self.container, HisSettings)
        self.value = (cfg.his_host, cfg.his_port) if cfg.his_host else None

    def get_dependency(self, worker_ctx: Any) -> tuple[str, int] | None:
        return self.value


def his_backlog(cur: Any, cfg: Settings, now: datetime) -> Check:
    """Per hospital: HL7 messages not acknowledged yet. Degraded when a hospital's HIS does not
    answer while messages wait (the breaker counts failures), or when its backlog passes
    HEALTH_HIS_BACKLOG_MAX messages or HEALTH_HIS_BACKLOG_AGE_S seconds."""
    rows = readmodel.HIS_OUTBOX.health(cur, now)
    problems = []
    for r in rows:
        for state in ("waiting", "parked"):
            HIS_BACKLOG.labels(service_label(), r["hospital_id"], state).set(r[state])
        if r["waiting"] and (r["circuit"] == "open" or r["failures"]):
            problems.append(f"{r['hospital_id']}: {r['waiting']} HL7 message(s) waiting, the HIS does not answer "
                            f"({r['failures']} failure(s) in a row: {r['last_error'] or '?'})")
        elif r["waiting"] > cfg.health_his_backlog_max or r["oldest_waiting_s"] > cfg.health_his_backlog_age_s:
            problems.append(f"{r['hospital_id']}: {r['waiting']} HL7 message(s) waiting, the oldest "
                            f"{r['oldest_waiting_s']:.0f} s")
    hospitals = {r["hospital_id"]: {k: r[k] for k in ("waiting", "parked", "oldest_waiting_s", "circuit", "failures")}
                 for r in rows}
    numbers = {"waiting": sum(r["waiting"] for r in rows), "parked": sum(r["parked"] for r in rows),
               "hospitals": hospitals}
    return degraded("; ".join(problems), **numbers) if problems else ok(**numbers)


@bind_reactions(APP)
class HisSyncService:
    name = "his_sync"

    log = LogContext()
    db = ServiceDatabase(readmodel.SCHEMA)
    store = Store()
    settings: HisSettings = SettingsProvider(HisSettings)
    vault = Vault()
    booking = RpcProxy("booking")
    schedule = RpcProxy("schedule")
    now = Clock(HOSPITAL_TZ)
    default_his = DefaultHis()
    dispatcher = HisDispatcher()
    listener = HisListener()
    metrics = Metrics()
    checks = HealthChecks(his_backlog=his_backlog)
    # The read model's surfaces, injected into the reactions by these names.
    appointments = readmodel.APPOINTMENTS
    his_endpoints = readmodel.HIS_ENDPOINTS
    his_outbox = readmodel.HIS_OUTBOX
    his_handovers = readmodel.HIS_HANDOVERS
    identities = readmodel.IDENTITIES

    @rpc
    def health(self) -> dict[str, Any]:
        """The service's facts (infra.health): database, store, broker, relay, dead letters, the HIS backlog."""
        return self.checks.report()

    @rpc
    @contract()
    def sent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest acknowledged messages."""
        with self.db.transaction() as cur:
            return readmodel.HIS_OUTBOX.sent(cur, limit)

    @rpc
    @contract()
    def messages(self, hospital_id: str | None = None, status: str | None = None, limit: int = 100,
                 handover_date: str | None = None) -> list[dict[str, Any]]:
        """Each message's state, newest first, without its text (it holds the patient's name and ID)."""
        if status is not None and status not in readmodel.MESSAGE_STATES:
            raise InvalidInput(f"status: one of {', '.join(readmodel.MESSAGE_STATES)}", field="status")
        day = date.fromisoformat(handover_date) if handover_date else None
        with self.db.transaction() as cur:
            return readmodel.HIS_OUTBOX.messages(cur, max(1, min(limit, 500)), status, hospital_id, day)

    @rpc
    @contract()
    def requeue(self, message_id: str, actor: dict[str, Any], skip: bool = False) -> dict[str, Any]:
        return handlers.requeue(message_id, Actor.model_validate(actor), self.db, readmodel.HIS_OUTBOX, self.now(),
                                skip=skip)

    @rpc
    @contract()
    def endpoints(self) -> list[dict[str, Any]]:
        """Every hospital's HIS connection with its breaker and backlog (waiting, parked)."""
        with self.db.transaction() as cur:
            rows = readmodel.HIS_ENDPOINTS.all(cur)
            backlog = readmodel.HIS_OUTBOX.backlog(cur)
        return [{**handlers._endpoint_answer(r), **backlog.get(r["hospital_id"], {"waiting": 0, "parked": 0})}
                for r in rows]

    @rpc
    @contract()
    def set_endpoint(self, payload: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
        return handlers.set_endpoint(payload, Actor.model_validate(actor), self.db, readmodel.HIS_ENDPOINTS, self.vault)

    @rpc
    @contract()
    def handover(self, hospital_id: str, day: str) -> dict[str, Any]:
        """The hand-over of a visit day: whether it happened (and with how many bookings), and
        each booking's A05 with the HIS's answer."""
        visit_day = _day(day)
        with self.db.transaction() as cur:
            done = readmodel.HIS_HANDOVERS.of(cur, hospital_id, visit_day)
            rows = readmodel.HIS_OUTBOX.messages(cur, 500, None, hospital_id, visit_day)
        return {"handed_over": done is not None, **(done or {"bookings": 0, "handed_over_at": None}),
                "messages": rows}

    @rpc
    @contract()
    def reconciliation(self, hospital_id: str, day: str) -> dict[str, Any]:
        """对账: a hospital day's messages, sent vs acknowledged, and every difference."""
        return handlers.reconciliation(hospital_id, _day(day), self.db, readmodel.HIS_OUTBOX, HOSPITAL_TZ)

    @rpc
    @contract()
    def reconciliation_csv(self, hospital_id: str, day: str) -> str:
        return handlers.reconciliation_csv(
            handlers.reconciliation(hospital_id, _day(day), self.db, readmodel.HIS_OUTBOX, HOSPITAL_TZ))

    @rpc
    @contract()
    def inbound(self, limit: int = 50, hospital_id: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            return readmodel.HIS_INBOUND.latest(cur, limit, hospital_id)

    # --- HTTP from the hospitals' HIS (WEB_SERVER_ADDRESS: HIS_HTTP_ADDRESS), signed per hospital ---

    @http("POST", "/his/v1/visits")
    def report_visits(self, request: Request) -> Response:
        """{"date": "YYYY-MM-DD", "visits": n}: the day's outpatient visits (the booking share)."""
        return self._signed(request, lambda hospital_id, body: handlers.report_visits(
            hospital_id, json.loads(body or b"{}"), self.store, self.now()))

    @http("POST", "/his/v1/fhir/Bundle")
    def fhir_bundle(self, request: Request) -> Response:
        """A FHIR R4 Bundle of Schedule and Slot: sessions published or changed, stop requests."""
        return self._signed(request, lambda hospital_id, body: handlers.receive_bundle(
            hospital_id, body, self.db, readmodel.HIS_INBOUND, self.schedule, self.now()))

    def _signed(self, request: Request, act: Any) -> Response:
        body = request.get_data(cache=False)
        if len(body) > MAX_HTTP_BODY:
            return _json({"error": {"code": "too_large", "message": f"at most {MAX_HTTP_BODY} bytes"}}, 413)
        try:
            hospital_id = handlers.check_signature(request.headers, body, self.db, readmodel.HIS_ENDPOINTS,
                                                   self.vault, self.now())
        except handlers.Unauthorized as exc:
            self.log.warning("his_http_refused", reason=str(exc))
            return _json({"error": {"code": "unauthorized", "message": str(exc)}}, 401)
        try:
            return _json(act(hospital_id, body), 200)
        except ValueError as exc:  # the body is not JSON
            return _json({"error": {"code": "invalid_input", "message": f"not JSON: {exc}"[:300]}}, 400)
        except DomainError as exc:
            wire = to_wire(exc)["domain_error"]
            return _json({"error": wire}, int(wire.get("status") or 400))


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("date: YYYY-MM-DD", field="date") from None


MAX_HTTP_BODY = 4 * 1024 * 1024  # a whole week's plan of a big hospital fits


def _json(data: Any, status: int) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status=status, mimetype="application/json")
