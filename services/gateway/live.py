"""Live notices for the pages: schedule changes pushed as Server-Sent Events (GET /api/v1/live).

Every gateway replica follows the booking and schedule events on RabbitMQ with a queue of its own
and turns each into a public notice, `{"type", "session_id", "department_id", "hospital_id",
"date"}`: which session changed, never who booked it. A page keeps one stream open and re-reads
the session it shows when a notice names it.

- `Ring` keeps the last notices in store order; `id:` of each frame is the event's store position,
  global across replicas, so a browser that reconnects (to any replica) with `Last-Event-ID` is
  sent what it missed, or one `resync` when that is older than the ring holds.
- `Hub` holds the open streams, indexed by topic, with a per-process cap; each stream's queue is
  bounded and a stream that falls behind is ended (its browser reconnects and resumes).
- `LiveFeed` is the nameko side: the consumer, the resolver of a session's department and the
  streaming answer.

Why not nameko's `@event_handler(..., handler_type=BROADCAST)`: it makes one queue per event type
per replica (eleven here), so notices of different types come in no common order and `id:` could
go backwards; each message also takes a worker from the pool the HTTP requests need. One
exclusive, auto-deleted queue per replica bound to both exchanges keeps the relay's publishing
order (one publisher, confirms, one queue), is not counted against `max_workers`, and vanishes
with its replica. The notices are no effects: a crashed replica loses its queue and its pages
resync when they reconnect elsewhere.

Why streams do not hold nameko workers: nameko's WebServer serves each connection in a managed
thread of its own (not the worker pool) and runs the entrypoint in a worker only to get the
Response; iterating the Response's body happens afterwards in the connection's thread, once the
worker is gone. So the entrypoint returns at once with a generator body (`direct_passthrough`,
and `eventlet.minimum_write_chunk_size` 0: eventlet's wsgi otherwise buffers 4 KiB before it
writes), and an open stream costs a greenlet and a socket, not one of the `max_workers`. The
generator must therefore use nothing a worker holds (database connections, RPC proxies), only
this process-level hub.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import eventlet
import eventlet.queue
from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy
from pydantic import Field
from werkzeug.wrappers import Request, Response

from contracts import DomainError, InvalidInput, from_wire
from infra.logging import get_logger
from infra.settings import Settings, settings_for

_log = get_logger("gateway.live")

# The events that change what a schedule shows, by the service that publishes them.
WATCHED: dict[str, tuple[str, ...]] = {
    "booking": ("AppointmentBooked", "AppointmentCancelled", "AppointmentMoved", "AppointmentCheckedIn",
                "AppointmentLapsed", "AppointmentRefunded", "SessionStopApplied"),
    "schedule": ("SessionScheduled", "SessionQuotaChanged", "DoctorStopApproved", "HolidayDeclared"),
}
TOPIC_KINDS = ("session", "department", "hospital")
TOPIC_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
MAX_TOPICS = 100
RESYNC = "resync"


class LiveSettings(Settings):
    live_max_streams: int = Field(default=5000, ge=1, alias="LIVE_MAX_STREAMS",
                                  description="open streams per gateway process; beyond: 503")
    live_ring: int = Field(default=10_000, ge=10, alias="LIVE_RING",
                           description="notices kept for Last-Event-ID; older: resync")
    live_stream_queue: int = Field(default=200, ge=1, alias="LIVE_STREAM_QUEUE",
                                   description="notices waiting for one stream's socket; more: the stream ends")
    live_heartbeat_s: float = Field(default=15.0, gt=0, alias="LIVE_HEARTBEAT_S")
    live_max_age_s: float = Field(default=900.0, gt=0, alias="LIVE_MAX_AGE_S",
                                  description="a stream ends after this (with jitter); the browser resumes")
    live_sessions: int = Field(default=100_000, ge=100, alias="LIVE_SESSIONS",
                               description="sessions whose department is remembered")


class LiveBusy(DomainError):
    code = "live_busy"
    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotAcceptable(DomainError):
    code = "not_acceptable"
    status = 406


# --- notices --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Notice:
    position: int
    type: str
    session_id: str | None = None
    department_id: str | None = None
    hospital_id: str | None = None
    date: str | None = None
    frame: bytes = field(default=b"", compare=False, repr=False)

    def public(self) -> dict[str, str | None]:
        return {"type": self.type, "session_id": self.session_id, "department_id": self.department_id,
                "hospital_id": self.hospital_id, "date": self.date}


def framed(notice: Notice) -> Notice:
    """The notice with its SSE frame, built once and shared by every stream."""
    data = json.dumps(notice.public(), ensure_ascii=False, separators=(",", ":"))
    frame = f"id: {notice.position}\nevent: {notice.type}\ndata: {data}\n\n".encode()
    return Notice(notice.position, notice.type, notice.session_id, notice.department_id, notice.hospital_id,
                  notice.date, frame)


@dataclass(frozen=True)
class Place:
    hospital_id: str | None
    department_id: str | None
    date: str | None


class Directory:
    """Where each session belongs (hospital, department, day), learnt from the events that say it
    and from lookups; most events name only the session. Bounded, least recently used out."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._sessions: OrderedDict[str, Place] = OrderedDict()
        self._hospital_of: OrderedDict[str, str] = OrderedDict()  # department -> hospital

    def learn(self, session_id: str, place: Place) -> None:
        self._sessions[session_id] = place
        self._sessions.move_to_end(session_id)
        if len(self._sessions) > self.size:
            self._sessions.popitem(last=False)
        if place.department_id and place.hospital_id:
            self._hospital_of[place.department_id] = place.hospital_id
            self._hospital_of.move_to_end(place.department_id)
            if len(self._hospital_of) > self.size:
                self._hospital_of.popitem(last=False)

    def get(self, session_id: str) -> Place | None:
        return self._sessions.get(session_id)

    def hospital_of(self, department_id: str) -> str | None:
        return self._hospital_of.get(department_id)


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def notice_of(envelope: Mapping[str, Any], directory: Directory,
              lookup: Callable[[str], Place | None] | None = None) -> Notice | None:
    """The public notice of one relayed event (None: not a watched event, or no store position).
    Only ids and the day are copied; `lookup` is asked for a session the directory does not know."""
    kind, data, position = envelope.get("type"), envelope.get("data") or {}, envelope.get("position")
    if not isinstance(kind, str) or kind not in WATCHED.get(str(envelope.get("source")), ()) \
            or not isinstance(position, int):
        return None
    session_id = _text(data.get("session_id"))
    told = Place(_text(data.get("hospital_id")), _text(data.get("department_id")), _text(data.get("date")))
    if session_id is None:  # a hospital's day (HolidayDeclared)
        return framed(Notice(position, kind, None, None, told.hospital_id, told.date))
    if told.department_id and told.hospital_id and told.date:
        directory.learn(session_id, told)
        known: Place | None = told
    else:
        known = directory.get(session_id)
        if known is None and lookup is not None:
            known = lookup(session_id)
            if known is not None:
                directory.learn(session_id, known)
    known = known or Place(None, None, None)
    return framed(Notice(position, kind, session_id, told.department_id or known.department_id,
                         told.hospital_id or known.hospital_id, told.date or known.date))


# --- what a stream asks for -----------------------------------------------------------------------

@dataclass(frozen=True)
class Topics:
    sessions: frozenset[str] = frozenset()
    departments: frozenset[str] = frozenset()
    hospitals: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> Topics:
        """From the query (`department=`, `hospital=`, `session=`, each repeatable, or
        comma-separated); other parameters are ignored. At least one, at most MAX_TOPICS."""
        found: dict[str, set[str]] = {k: set() for k in TOPIC_KINDS}
        for key, value in pairs:
            if key not in found:
                continue
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                if not TOPIC_ID.match(item):
                    raise InvalidInput(f"{key} 格式不正确 / {key} must be an id (letters, digits, - _ .)", field=key)
                found[key].add(item)
        count = sum(len(v) for v in found.values())
        if count == 0:
            raise InvalidInput("请指定 department、hospital 或 session / name a department, hospital or session",
                               field="department")
        if count > MAX_TOPICS:
            raise InvalidInput(f"最多 {MAX_TOPICS} 个主题 / at most {MAX_TOPICS} topics", field="session")
        return cls(frozenset(found["session"]), frozenset(found["department"]), frozenset(found["hospital"]))

    def matches(self, notice: Notice, directory: Directory) -> bool:
        if notice.session_id in self.sessions or notice.department_id in self.departments \
                or notice.hospital_id in self.hospitals:
            return True
        # a hospital-wide notice reaches the pages of its departments
        return notice.session_id is None and notice.department_id is None and notice.hospital_id is not None \
            and any(directory.hospital_of(d) == notice.hospital_id for d in self.departments)


# --- the ring -------------------------------------------------------------------------------------

class Ring:
    """The last `size` notices in store order. `floor`: every watched event after it is here (None:
    nothing is known, e.g. before the first event or after the feed was cut)."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: deque[Notice] = deque()
        self.size = size
        self.floor: int | None = None
        self.last: int | None = None

    def add(self, notice: Notice) -> bool:
        """False for a position already passed (the relay republishes after a crash)."""
        if self.last is not None and notice.position <= self.last:
            return False
        if self.floor is None:
            # the feed is continuous from here: nothing watched lies between position - 1 and this one
            self.floor = notice.position - 1
        self._items.append(notice)
        self.last = notice.position
        if len(self._items) > self.size:
            self.floor = self._items.popleft().position
        return True

    def since(self, last_id: int) -> list[Notice] | None:
        """The notices after `last_id`; None when they may not all be here (the page must resync)."""
        if self.floor is None or last_id < self.floor:
            return None
        if self.last is not None and last_id >= self.last:
            return []
        out: list[Notice] = []
        for notice in reversed(self._items):
            if notice.position <= last_id:
                break
            out.append(notice)
        out.reverse()
        return out

    def cut(self) -> None:
        """The feed was interrupted: what came meanwhile is unknown (positions still de-duplicate)."""
        self._items.clear()
        self.floor = None

    def __len__(self) -> int:
        return len(self._items)


# --- streams --------------------------------------------------------------------------------------

class Stream:
    """One open event stream: its topics and the frames waiting for its socket. `wake` is called
    when something is queued (the streaming greenlet waits on it)."""

    def __init__(self, topics: Topics, limit: int, wake: Callable[[], None] = lambda: None) -> None:
        self.topics = topics
        self.limit = limit
        self.wake = wake
        self.pending: deque[bytes] = deque()
        self.dropped = False  # fell behind: ended, the browser reconnects and resumes

    def push(self, frame: bytes) -> None:
        if self.dropped:
            return
        if len(self.pending) >= self.limit:
            self.dropped = True
            self.pending.clear()
        else:
            self.pending.append(frame)
        self.wake()

    def take(self) -> list[bytes]:
        frames = list(self.pending)
        self.pending.clear()
        return frames


def resync_frame(position: int | None) -> bytes:
    """Tells the page to re-read its data; the id (the newest known) makes the next resume cheap."""
    head = f"id: {position}\n" if position is not None else ""
    return f'{head}event: {RESYNC}\ndata: {{"type":"{RESYNC}"}}\n\n'.encode()


class Hub:
    """The open streams of this process, indexed by topic, and the ring they resume from."""

    def __init__(self, max_streams: int = 5000, ring: int = 10_000, stream_queue: int = 200,
                 directory: Directory | None = None) -> None:
        self.max_streams = max_streams
        self.stream_queue = stream_queue
        self.ring = Ring(ring)
        self.directory = directory or Directory()
        self.streams: set[Stream] = set()
        self._by: dict[str, dict[str, set[Stream]]] = {k: {} for k in TOPIC_KINDS}
        self.dropped = 0
        self.published = 0

    def open(self, topics: Topics, last_id: int | None = None, wake: Callable[[], None] = lambda: None) -> Stream:
        """A new stream, with what it missed after `last_id` already queued (or a resync). Registered
        and back-filled in one step, so no notice falls between the two."""
        if len(self.streams) >= self.max_streams:
            raise LiveBusy("实时通道已满，请稍后重试 / too many live streams here, retry shortly",
                           retry_after=random.randint(5, 30))
        stream = Stream(topics, self.stream_queue, wake)
        if last_id is not None:
            missed = self.ring.since(last_id)
            if missed is None:
                stream.pending.append(resync_frame(self.ring.last))
            else:
                # a long absence is one resync, not a flood that would drop the stream at once
                frames = [n.frame for n in missed if topics.matches(n, self.directory)]
                stream.pending.extend(frames if len(frames) < self.stream_queue
                                      else [resync_frame(self.ring.last)])
        self.streams.add(stream)
        for kind, ids in zip(TOPIC_KINDS, (topics.sessions, topics.departments, topics.hospitals), strict=True):
            for topic in ids:
                self._by[kind].setdefault(topic, set()).add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        if stream not in self.streams:
            return
        self.streams.discard(stream)
        topics = stream.topics
        for kind, ids in zip(TOPIC_KINDS, (topics.sessions, topics.departments, topics.hospitals), strict=True):
            for topic in ids:
                holders = self._by[kind].get(topic)
                if holders is not None:
                    holders.discard(stream)
                    if not holders:
                        del self._by[kind][topic]

    def publish(self, notice: Notice) -> int:
        """Keep the notice and queue it for every stream it concerns; answers how many."""
        if not self.ring.add(notice):
            return 0
        self.published += 1
        targets: set[Stream] = set()
        for kind, topic in (("session", notice.session_id), ("department", notice.department_id),
                            ("hospital", notice.hospital_id)):
            if topic is not None:
                targets |= self._by[kind].get(topic, set())
        if notice.session_id is None and notice.department_id is None and notice.hospital_id is not None:
            for department, holders in self._by["department"].items():
                if self.directory.hospital_of(department) == notice.hospital_id:
                    targets |= holders
        for stream in targets:
            was_dropped = stream.dropped
            stream.push(notice.frame)
            if stream.dropped and not was_dropped:
                self.dropped += 1
        return len(targets)

    def cut(self) -> None:
        """The feed from the broker broke: every open stream may have missed notices."""
        self.ring.cut()
        frame = resync_frame(None)
        for stream in list(self.streams):
            stream.push(frame)


def last_event_id(request: Request) -> int | None:
    """The browser's Last-Event-ID (a reconnect), or `last_event_id` in the query (a page that had
    to open a new EventSource, which cannot set the header)."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or ""
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


# --- nameko: the feed and the streaming answer ---------------------------------------------------

class LiveFeed(DependencyProvider):
    """Follows the watched events on the broker in a managed thread (not a worker) and answers
    GET /api/v1/live with a stream that lives in the connection's own greenlet."""

    def setup(self) -> None:
        self.cfg: LiveSettings = settings_for(self.container, LiveSettings)
        self.hub = Hub(self.cfg.live_max_streams, self.cfg.live_ring, self.cfg.live_stream_queue,
                       Directory(self.cfg.live_sessions))
        self.queue_name = f"gateway.live.{socket.gethostname()}.{uuid.uuid4().hex[:8]}"
        self._running = False
        self._rpc: Any = None  # a standalone RPC proxy: the feed is no worker, it has no RpcProxy
        self._cluster: Any = None
        logging.getLogger("nameko.web.server").addFilter(_QuietDisconnects())

    def start(self) -> None:
        self._running = True
        self.container.spawn_managed_thread(self._follow)

    def stop(self) -> None:
        self._running = False
        self._drop_rpc()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx: Any) -> LiveFeed:
        return self

    # --- the answer -------------------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        if "text/event-stream" not in request.headers.get("Accept", ""):
            raise NotAcceptable("此接口只回答事件流 / this endpoint answers only Accept: text/event-stream",
                                field="Accept")
        topics = Topics.parse(request.args.items(multi=True))
        resuming = last_event_id(request)
        bell: eventlet.queue.LightQueue = eventlet.queue.LightQueue(1)  # this stream's doorbell

        def wake() -> None:
            if bell.qsize() == 0:
                bell.put_nowait(None)

        stream = self.hub.open(topics, resuming, wake)
        request.environ["eventlet.minimum_write_chunk_size"] = 0  # write each frame at once
        cfg = self.cfg
        age = cfg.live_max_age_s * random.uniform(0.8, 1.0)  # staggered: not every page reconnects at once

        def body() -> Iterator[bytes]:
            try:
                # reconnect after 2-5 s, spread so that a restarted replica is not hit all at once
                # a fresh page gets the newest position as its id: its next reconnect resumes from there
                newest = self.hub.ring.last
                start = f"id: {newest}\n\n" if resuming is None and newest is not None else ": open\n\n"
                yield f"retry: {random.randint(2000, 5000)}\n{start}".encode()
                ends = time.monotonic() + age
                while not stream.dropped and time.monotonic() < ends:
                    frames = stream.take()
                    if frames:
                        yield b"".join(frames)
                        continue
                    try:
                        bell.get(timeout=cfg.live_heartbeat_s)
                    except eventlet.queue.Empty:
                        yield b": hb\n\n"
            finally:
                self.hub.close(stream)

        headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
        return Response(body(), status=200, mimetype="text/event-stream", headers=headers,
                        direct_passthrough=True)

    # --- the feed ---------------------------------------------------------------------------

    def _follow(self) -> None:
        """Consume until stopped; after a broken connection, resync every stream and go on."""
        bindings = [binding(Exchange(f"{source}.events", type="topic", durable=True), routing_key=kind)
                    for source, kinds in WATCHED.items() for kind in kinds]
        first = True
        while self._running:
            try:
                with Connection(self.cfg.amqp_uri, heartbeat=20) as conn:
                    queue = Queue(self.queue_name, bindings=bindings, exclusive=True, auto_delete=True,
                                  durable=False, queue_arguments={"x-max-length": self.cfg.live_ring,
                                                                  "x-overflow": "drop-head"})
                    # no_ack: the broker counts a notice delivered once sent, no ack frame per
                    # event (issue 15: every booking's events reach every replica's feed). A notice
                    # is no effect: one lost with a broken connection is covered by the resync.
                    with conn.Consumer(queue, callbacks=[self._on_message], accept=["json"], no_ack=True):
                        if not first:
                            self.hub.cut()
                        first = False
                        _log.info("live_feed_following", queue=self.queue_name)
                        while self._running:
                            try:
                                conn.drain_events(timeout=2)
                            except TimeoutError:
                                conn.heartbeat_check()
            except Exception as exc:  # noqa: BLE001 - the broker went away: resync and retry
                if not self._running:
                    return
                _log.warning("live_feed_reconnecting", error=f"{type(exc).__name__}: {exc}")
                eventlet.sleep(1.0)

    def _on_message(self, body: Any, message: Any) -> None:
        try:
            notice = notice_of(body, self.hub.directory, self._lookup) if isinstance(body, dict) else None
            if notice is not None:
                self.hub.publish(notice)
        except Exception:  # noqa: BLE001 - a bad message must not stop the feed
            _log.exception("live_notice_failed")

    def _lookup(self, session_id: str) -> Place | None:
        """A session no event has told this replica about yet: ask schedule (bounded wait)."""
        try:
            if self._rpc is None:
                self._rpc = ClusterRpcProxy(self.container.config, timeout=3)
                self._cluster = self._rpc.start()
            found = self._cluster.schedule.get_session(session_id)
        except Exception as exc:  # noqa: BLE001 - the notice goes out with what it names itself
            _log.warning("live_session_lookup_failed", session_id=session_id, error=type(exc).__name__)
            self._drop_rpc()
            return None
        if not isinstance(found, dict) or from_wire(found) is not None:
            return None
        return Place(_text(found.get("hospital_id")), _text(found.get("department_id")), _text(found.get("date")))

    def _drop_rpc(self) -> None:
        proxy, self._rpc = self._rpc, None
        if proxy is not None:
            try:
                proxy.stop()
            except Exception:  # noqa: BLE001 - a broken proxy is replaced either way
                pass


class _QuietDisconnects(logging.Filter):
    """A browser leaving a stream is how streams end: eventlet logs the broken pipe as a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("BrokenPipeError" in text or "ConnectionResetError" in text)
