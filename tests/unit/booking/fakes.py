"""Fakes at booking's boundary for handler tests: a read model folded straight from the
in-memory store (what the real projection would hold), a patients vault in a dict, and store
wrappers that count reads or inject conflicts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from contracts import BookingRules, Envelope
from infra.eventstore import InMemoryEventStore, WrongExpectedVersion
from services.booking.domain import SessionInfo


class FakeReadModel:
    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.patients: dict[str, dict[str, Any]] = {}
        self.waited: list[int] = []

    def caught_up(self, position: int, timeout: float = 10.0) -> bool:
        self.waited.append(position)
        return position <= self.store.head()

    # --- what the projection would hold ----------------------------------------------------

    def _sessions(self) -> dict[str, SessionInfo]:
        out: dict[str, dict[str, Any]] = {}
        stopped: set[str] = set()
        for ev in self.store.read_all(0, 10**9):
            if ev.type == "SessionScheduled":
                out[ev.data["session_id"]] = dict(ev.data)
            elif ev.type == "SessionQuotaChanged" and ev.data["session_id"] in out:
                out[ev.data["session_id"]]["quota"] = ev.data["quota"]
            elif ev.type == "SessionStopApplied":
                stopped.add(ev.data["session_id"])
        return {k: SessionInfo.from_event(v, stopped=k in stopped) for k, v in out.items()}

    def _appointments(self) -> dict[str, dict[str, Any]]:
        status = {"AppointmentCancelled": "cancelled", "AppointmentCheckedIn": "checked_in",
                  "AppointmentLapsed": "no_show", "AppointmentRefunded": "refunded"}
        out: dict[str, dict[str, Any]] = {}
        for ev in self.store.read_all(0, 10**9):
            if ev.type == "AppointmentBooked":
                out[ev.data["appointment_id"]] = {**ev.data, "status": "booked"}
            elif ev.type == "AppointmentMoved":
                out[ev.data["appointment_id"]] = {**ev.data, "status": "moved"}
            elif ev.type in status:
                out[ev.data["appointment_id"]]["status"] = status[ev.type]
        return out

    def session_and_rules(self, session_id: str) -> tuple[SessionInfo | None, BookingRules]:
        return self._sessions().get(session_id), BookingRules()

    def session_info(self, session_id: str) -> SessionInfo | None:
        return self._sessions().get(session_id)

    def sessions_info(self, session_ids: list[str]) -> dict[str, SessionInfo]:
        return {k: v for k, v in self._sessions().items() if k in session_ids}

    def appointment(self, appointment_id: str) -> dict[str, Any] | None:
        a = self._appointments().get(appointment_id)
        return {"session_id": a["session_id"], "patient_id": a["patient_id"]} if a else None

    def appointment_by_code(self, code: str) -> dict[str, Any] | None:
        for a in self._appointments().values():
            if a["code"] == code.upper():
                row = self.patients.get(a["patient_id"])
                return {"appointment_id": a["appointment_id"], "session_id": a["session_id"],
                        "patient_id": a["patient_id"], "id_hash": row["id_hash"] if row else None}
        return None

    def due_for_lapse(self, now: datetime, limit: int = 500, backfill: bool = False) -> list[tuple[str, str]]:
        sessions = self._sessions()
        return [(a["appointment_id"], a["session_id"]) for a in self._appointments().values()
                if a["status"] in ("booked", "moved") and sessions[a["session_id"]].lapse_at <= now
                and bool(a.get("backfill")) == backfill][:limit]

    def paid_phone_bookings(self, hospital_id: str, visit_date: str) -> list[dict[str, Any]]:
        return [a for a in self._appointments().values() if a["channel"] == "phone" and a.get("paid")
                and a["status"] in ("booked", "moved") and a["hospital_id"] == hospital_id
                and a["date"] == visit_date]

    def session_list(self, session_id: str) -> list[dict[str, Any]]:
        return sorted((a for a in self._appointments().values() if a["session_id"] == session_id),
                      key=lambda a: a["sequence_number"])

    def _window(self, a: dict[str, Any]) -> dict[str, Any]:
        session = self._sessions()[a["session_id"]]
        row = self.patients.get(a["patient_id"], {})
        return {**a, "doctor_name": session.doctor_name, "id_masked": row.get("id_masked"),
                "phone_masked": row.get("phone_masked"), "name_enc": row.get("name_enc")}

    def window_row_by_code(self, code: str) -> dict[str, Any] | None:
        return next((self._window(a) for a in self._appointments().values() if a["code"] == code.upper()), None)

    def window_rows_of_patient(self, patient_id: str, hospital_id: str) -> list[dict[str, Any]]:
        mine = [a for a in self._appointments().values()
                if a["patient_id"] == patient_id and a["hospital_id"] == hospital_id]
        mine.sort(key=lambda a: (a["date"], a["start"], a["sequence_number"]), reverse=True)
        return [self._window(a) for a in mine]

    def hospital_day_rows(self, hospital_id: str, day: str, department_id: str | None = None,
                          doctor_id: str | None = None) -> list[dict[str, Any]]:
        sessions = self._sessions()
        periods = {"morning": 1, "afternoon": 2}
        rows = [a for a in self._appointments().values()
                if (s := sessions[a["session_id"]]).hospital_id == hospital_id and s.date == day
                and department_id in (None, s.department_id) and doctor_id in (None, s.doctor_id)]
        rows.sort(key=lambda a: (a["department_id"], a["doctor_id"], periods.get(a["period"], 3), a["start"],
                                 a["sequence_number"]))
        return [self._window(a) for a in rows]

    # --- the patients vault ------------------------------------------------------------------

    def add_patient(self, row: dict[str, Any], phone_max_patients: int) -> bool:
        if any(r["id_hash"] == row["id_hash"] for r in self.patients.values()):
            return False
        self.patients[row["patient_id"]] = dict(row)
        return True

    def login_candidates(self, lookup_hash: str) -> list[tuple[str, str | None, str, str]]:
        return [(r["patient_id"], r["password_hash"], r["id_masked"], r["name_enc"]) for r in self.patients.values()
                if lookup_hash in (r["id_hash"], r["phone_hash"])]

    def patient_by_id_hash(self, id_hash: str) -> dict[str, Any] | None:
        return next((r for r in self.patients.values() if r["id_hash"] == id_hash), None)

    def has_booking_at(self, patient_id: str, hospital_id: str) -> bool:
        return any(a["patient_id"] == patient_id and a["hospital_id"] == hospital_id
                   for a in self._appointments().values())

    def password_hash(self, patient_id: str) -> str | None:
        found = self.patients.get(patient_id)
        return found.get("password_hash") if found else None

    def set_password(self, patient_id: str, password_hash: str) -> None:
        self.patients[patient_id]["password_hash"] = password_hash

    def count_patients(self) -> int:
        return len(self.patients)

    def patients_after(self, after: str, limit: int) -> list[dict[str, Any]]:
        return [dict(self.patients[k]) for k in sorted(self.patients) if k > after][:limit]

    def rekey_patients(self, rows: list[dict[str, Any]]) -> int:
        for row in rows:
            assert self.patients[row["patient_id"]]["id_enc"] == row["old_id_enc"]
            self.patients[row["patient_id"]].update({k: v for k, v in row.items() if k != "old_id_enc"})
        return len(rows)

    def patient_identity(self, patient_id: str) -> dict[str, Any] | None:
        r = self.patients.get(patient_id)
        if r is None:
            return None
        return {"name_enc": r["name_enc"], "id_enc": r["id_enc"], "phone_enc": r["phone_enc"], "sex": r["sex"],
                "birth_date": str(r["birth_date"])}

    def patient_phone(self, patient_id: str) -> tuple[str, str, str] | None:
        r = self.patients.get(patient_id)
        return (r["phone_enc"], r["phone_masked"], r.get("locale", "zh")) if r else None


class CountingStore:
    """The in-memory store, counting the reads a handler makes."""

    def __init__(self, inner: InMemoryEventStore) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("read_") or name in ("get_event", "stream_version"):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.reads += 1
                return attr(*args, **kwargs)
            return counted
        return attr


class RacingStore(CountingStore):
    """Before each of the first `races` appends, another writer appends to the first stream
    the append touches: the handler's expected version is then stale, as with a second replica."""

    def __init__(self, inner: InMemoryEventStore, races: int) -> None:
        super().__init__(inner)
        self.races = races
        self.appends = 0

    def append(self, appends: Any) -> Any:
        self.appends += 1
        if self.races > 0:
            self.races -= 1
            stream = next(iter(appends))
            self.inner.append_to(stream, None, Envelope(type="Noise", stream=stream, source="test",
                                                        correlation_id="race", data={"n": str(uuid.uuid4())}))
        return self.inner.append(appends)


class AlwaysConflicting(CountingStore):
    def append(self, appends: Any) -> Any:
        stream = next(iter(appends))
        raise WrongExpectedVersion(stream, appends[stream][0], -1)
