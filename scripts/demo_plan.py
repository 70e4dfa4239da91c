"""The day plan of the demo history, pure: which fake patient does what, when, for weeks of past
sessions. No store, no clock, no I/O: the same sessions, anchor and seed give the same plan, so a
run cut short and started again replays exactly the same commands (their idempotency keys come
from the plan's references) and stores nothing twice.

scripts/demo_history.py turns each `Action` into the command the services themselves handle, at
`Action.at` on the simulated clock. The plan keeps every rule those decisions check, so none of
them is refused: bookings only between a session's `opens_at` and `closes_at`, never more than a
channel's quota (cancelled ones included, so utilisation stays at most 100%), one place per patient
and session, at most `max_active` bookings still to come and `max_per_day` a day (one per
department) per patient; cancellations before the cut-off; check-ins and 退号 on the visit day
before the lapse time; stops requested before the session begins, replacements (补诊) on a day the
doctor has no session. No-shows are capped at two per patient, so that the only bans are the few
chronic no-show patients planned for them (three no-shows within the ban window each).

Proportions (defaults): expert sessions mostly sell out within the first hour after release,
general ones fill 60–95%; about 6% of bookings are cancelled (by the patient on the web, by the
hotline operator on the phone), about 7% are no-shows, a few are refunded at the window; about 4%
of sessions get a stop request (most approved, with a replacement or without, some rejected); the
HIS reports the day's outpatient visits for about three days in four.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
CHANNELS = ("web", "phone", "window")
NO_SHOW_CAP = 2  # per ordinary patient: three within the ban window would ban them
# Hebei's prefecture districts (GB/T 2260): where the fake patients' resident IDs say they are from.
REGIONS = ("130102", "130104", "130105", "130108", "130109", "130181", "130183", "130202", "130203",
           "130302", "130402", "130403", "130502", "130602", "130606", "130702", "130802", "130902",
           "131002", "131102")
SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英",
         "霞", "平", "刚", "桂英", "建华", "玉兰", "志强", "海燕", "文", "华", "红", "建国", "淑珍", "婷", "宇", "浩然",
         "子涵", "欣怡", "雨桐", "国强", "秀兰", "春梅")
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
                   "156", "157", "158", "159", "166", "175", "176", "177", "178", "180", "181", "182", "183",
                   "185", "186", "187", "188", "189", "199")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


@dataclass(frozen=True)
class Session:
    """A published session as the plan needs it (booking's SessionInfo, plus the clinic type)."""

    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    day: date
    period: str
    start: datetime
    end: datetime
    opens_at: datetime
    closes_at: datetime
    lapse_at: datetime
    quota: dict[str, int]
    expert: bool


@dataclass(frozen=True)
class Patient:
    ref: str
    name: str
    id_number: str
    phone: str


@dataclass
class Action:
    """One command at `at` on the simulated clock. `ref` names what it creates or acts on: a
    patient (`p12`), a booking (`b345`), a stop (`s6`); `data` carries the rest."""

    at: datetime
    kind: str  # register, book, cancel, check_in, refund, lapse, stop_request, stop_approve, stop_reject, visits
    ref: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    """The per-patient limits the plan keeps (contracts.BookingRules' defaults)."""

    max_active: int = 5
    max_per_day: int = 2
    max_per_department_day: int = 1


@dataclass
class Plan:
    actions: list[Action]
    patients: dict[str, Patient]
    stops: int
    banned: int

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)


@dataclass
class _Booking:
    ref: str
    session: Session
    channel: str
    at: datetime
    patient: str = ""
    ends: datetime | None = None  # when it stops counting as still to come
    outcome: str = ""  # cancel, moved, stop_cancelled, check_in, no_show, refund_checked_in, refund_paid
    visit: Session | None = None  # the session visited (the replacement after a move)


@dataclass
class _PatientState:
    ref: str
    registered: datetime
    bookings: list[_Booking] = field(default_factory=list)
    no_shows: int = 0



def fake_resident_id(rng: random.Random, born: date, male: bool) -> str:
    order = rng.randrange(0, 500) * 2 + (1 if male else 0)
    body = f"{rng.choice(REGIONS)}{born:%Y%m%d}{order:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


def fake_patient(rng: random.Random, ref: str, until: date) -> Patient:
    male = rng.random() < 0.48
    born = until - timedelta(days=rng.randrange(3 * 365, 88 * 365))
    name = rng.choice(SURNAMES) + rng.choice(GIVEN)
    phone = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(0, 10**8):08d}"
    return Patient(ref=ref, name=name, id_number=fake_resident_id(rng, born, male), phone=phone)


def _unique_patient(rng: random.Random, ref: str, until: date, patients: dict[str, Patient]) -> Patient:
    """A fake patient whose resident ID and phone no other patient of the plan has (a second
    registration of one ID would be refused as someone else's account)."""
    taken = {p.id_number for p in patients.values()} | {p.phone for p in patients.values()}
    while True:
        patient = fake_patient(rng, ref, until)
        if patient.id_number not in taken and patient.phone not in taken:
            return patient


def plan(sessions: list[Session], until: date, seed: int = 13, rules: Rules = Rules(),
         banned: int = 4, start_of_history: datetime | None = None) -> Plan:
    """The whole history over `sessions` (all on or before `until`). `start_of_history`: nothing is
    planned before it (default: the earliest release)."""
    rng = random.Random(f"demo-history:{until.isoformat()}:{seed}")
    sessions = sorted(sessions, key=lambda s: (s.opens_at, s.session_id))
    if not sessions:
        return Plan([], {}, 0, 0)
    origin = start_of_history or min(s.opens_at for s in sessions)
    actions: list[Action] = []
    taken_days: dict[str, set[date]] = defaultdict(set)
    for s in sessions:
        taken_days[s.doctor_id].add(s.day)
    stops, replacements = _stops(rng, sessions, until, taken_days, actions)
    bookings = _bookings(rng, sessions, stops)
    patients, states = _patients(rng, bookings, stops, replacements, rules, until, origin)
    chronic = _chronic_no_shows(rng, sessions, bookings, stops, banned, patients, states, until, origin)
    for b in sorted(bookings, key=lambda b: (b.at, b.ref)):
        _book_actions(rng, b, actions)
    for st in states.values():
        actions.append(Action(st.registered, "register", st.ref))
    _lapses(bookings, actions)
    _visits(rng, bookings, actions)
    order = {"register": 0, "stop_request": 1, "stop_approve": 2, "stop_reject": 2, "book": 3, "cancel": 4,
             "check_in": 5, "refund": 6, "lapse": 7, "visits": 8}
    actions.sort(key=lambda a: (a.at, order[a.kind], a.ref))
    return Plan(actions, patients, stops=len(stops), banned=chronic)


# --- doctor stops -----------------------------------------------------------------------------

@dataclass
class _Stop:
    ref: str
    session: Session
    requested: datetime
    decided: datetime
    decision: str  # replace, cancel, reject
    replacement: Session | None = None


def _stops(rng: random.Random, sessions: list[Session], until: date, taken_days: dict[str, set[date]],
           actions: list[Action]) -> tuple[dict[str, _Stop], dict[str, Session]]:
    first = min(s.day for s in sessions)
    candidates = [s for s in sessions if first + timedelta(days=3) <= s.day <= until - timedelta(days=2)]
    count = min(len(candidates), max(3, round(len(sessions) * 0.04)))
    decisions = ("replace", "reject", "cancel", "replace", "reject", "replace", "cancel", "replace")
    stops: dict[str, _Stop] = {}
    replacements: dict[str, Session] = {}
    for i, s in enumerate(sorted(rng.sample(candidates, count), key=lambda s: (s.day, s.session_id))):
        requested = max(s.opens_at + timedelta(hours=2), s.start - timedelta(days=2, hours=-2))
        decided = requested + timedelta(hours=rng.choice((2, 3, 5)))
        stop = _Stop(f"s{i + 1}", s, requested, decided, decisions[i % len(decisions)])
        if stop.decision == "replace":
            day = next((s.day + timedelta(days=k) for k in range(1, 6)
                        if s.day + timedelta(days=k) <= until and s.day + timedelta(days=k) not in
                        taken_days[s.doctor_id]), None)
            if day is None:
                stop.decision = "cancel"
            else:
                taken_days[s.doctor_id].add(day)
                shift = timedelta(days=(day - s.day).days)
                stop.replacement = Session(
                    session_id=f"{s.session_id[:74]}-bz1", hospital_id=s.hospital_id, department_id=s.department_id,
                    doctor_id=s.doctor_id, day=day, period=s.period, start=s.start + shift, end=s.end + shift,
                    opens_at=s.opens_at, closes_at=s.closes_at, lapse_at=s.lapse_at + shift, quota=dict(s.quota),
                    expert=s.expert)
                replacements[s.session_id] = stop.replacement
        stops[s.session_id] = stop
        reason = rng.choice(("医生外出参加学术会议", "医生临时手术任务", "医生身体不适", "院内紧急会诊安排"))
        actions.append(Action(requested, "stop_request", stop.ref, {"session_id": s.session_id, "reason": reason}))
        if stop.decision == "reject":
            actions.append(Action(decided, "stop_reject", stop.ref,
                                  {"session_id": s.session_id, "reason": "号源已基本约满，请按原计划出诊"}))
        else:
            r = stop.replacement
            actions.append(Action(decided, "stop_approve", stop.ref, {
                "session_id": s.session_id,
                "replacement": None if r is None else {
                    "date": r.day.isoformat(), "period": r.period,
                    "start": r.start.astimezone(HOSPITAL_TZ).time().isoformat("minutes"),
                    "end": r.end.astimezone(HOSPITAL_TZ).time().isoformat("minutes")},
                "replacement_session_id": None if r is None else r.session_id}))
    return stops, replacements


# --- bookings -----------------------------------------------------------------------------------

def _bookings(rng: random.Random, sessions: list[Session], stops: dict[str, _Stop]) -> list[_Booking]:
    out: list[_Booking] = []
    for s in sessions:
        sells_out = s.expert and rng.random() < 0.75
        stop = stops.get(s.session_id)
        last = stop.requested if stop is not None and stop.decision != "reject" else s.closes_at
        for channel in CHANNELS:
            quota = s.quota.get(channel, 0)
            if quota <= 0:
                continue
            fill = 1.0 if sells_out else rng.uniform(0.85, 1.0) if s.expert else rng.uniform(0.6, 0.95)
            for _ in range(min(quota, round(quota * fill))):
                at = _booking_time(rng, s, channel, sells_out)
                if at < last - timedelta(minutes=1):
                    out.append(_Booking(f"b{len(out) + 1}", s, channel, at))
    return out


def _booking_time(rng: random.Random, s: Session, channel: str, hot: bool) -> datetime:
    window = (s.closes_at - s.opens_at).total_seconds()
    if hot:  # a sell-out: the release's first hour or so
        mean = {"web": 900.0, "phone": 1500.0, "window": 5400.0}[channel]
        offset = min(rng.expovariate(1 / mean), window * 0.5)
    else:
        offset = window * rng.random() ** 1.6
    return s.opens_at + timedelta(seconds=max(3.0, min(offset, window - 120)))


def _patients(rng: random.Random, bookings: list[_Booking], stops: dict[str, _Stop],
              replacements: dict[str, Session], rules: Rules, until: date, origin: datetime
              ) -> tuple[dict[str, Patient], dict[str, _PatientState]]:
    patients: dict[str, Patient] = {}
    states: dict[str, _PatientState] = {}
    in_session: defaultdict[str, set[str]] = defaultdict(set)
    last_in_session: dict[str, datetime] = {}
    for b in bookings:
        last_in_session[b.session.session_id] = max(last_in_session.get(b.session.session_id, b.at), b.at)
    for b in sorted(bookings, key=lambda b: (b.at, b.ref)):
        _decide_outcome(rng, b, stops.get(b.session.session_id), replacements, last_in_session)
        ref = _choose_patient(rng, b, states, in_session, rules)
        if ref is None:
            ref = f"p{len(patients) + 1}"
            patients[ref] = _unique_patient(rng, ref, until, patients)
            registered = max(origin, b.at - timedelta(seconds=rng.uniform(600, 3 * 86400)))
            states[ref] = _PatientState(ref, min(registered, b.at - timedelta(seconds=30)))
        b.patient = ref
        states[ref].bookings.append(b)
        if b.outcome == "no_show":
            states[ref].no_shows += 1
        in_session[b.session.session_id].add(ref)
        if b.visit is not None and b.visit is not b.session:
            in_session[b.visit.session_id].add(ref)
    return patients, states


def _decide_outcome(rng: random.Random, b: _Booking, stop: _Stop | None, replacements: dict[str, Session],
                    last_in_session: dict[str, datetime]) -> None:
    s = b.session
    cancel_from = max(b.at, last_in_session[s.session_id]) if s.expert else b.at
    cancel_until = stop.decided if stop is not None and stop.decision != "reject" else s.closes_at
    if rng.random() < (0.05 if s.expert else 0.07) and cancel_until - cancel_from > timedelta(minutes=10):
        b.outcome = "cancel"
        b.ends = cancel_from + (cancel_until - cancel_from) * rng.uniform(0.05, 0.95)
        return
    if stop is not None and stop.decision == "cancel":
        b.outcome, b.ends = "stop_cancelled", stop.decided
        return
    b.visit = replacements.get(s.session_id, s) if stop is not None and stop.decision == "replace" else s
    b.ends = b.visit.lapse_at
    roll = rng.random()
    if roll < 0.07:
        b.outcome = "no_show"
    elif roll < 0.08 and b.channel == "phone":
        b.outcome = "refund_paid"
    elif roll < 0.09:
        b.outcome = "refund_checked_in"
    else:
        b.outcome = "check_in"


def _choose_patient(rng: random.Random, b: _Booking, states: dict[str, _PatientState],
                    in_session: defaultdict[str, set[str]], rules: Rules) -> str | None:
    if not states or rng.random() < 0.3:
        return None
    refs = list(states)
    for _ in range(8):
        ref = rng.choice(refs)
        if _fits(states[ref], b, in_session, rules):
            return ref
    return None


def _fits(st: _PatientState, b: _Booking, in_session: defaultdict[str, set[str]], rules: Rules) -> bool:
    """Whether booking's rules let this patient book `b` at its time: bookings are assigned in time
    order, so the patient's bookings still to come then are all known."""
    if st.ref.startswith("x") or st.registered >= b.at:
        return False
    if st.ref in in_session[b.session.session_id] or (b.visit is not None and st.ref in in_session[b.visit.session_id]):
        return False
    if b.outcome == "no_show" and st.no_shows >= NO_SHOW_CAP:
        return False
    slack = timedelta(minutes=5)  # a no-show counts until the lapse timer has run
    active = [o for o in st.bookings if o.at <= b.at < (o.ends or o.at) + slack]
    if len(active) + 1 > rules.max_active - 1:  # one spare, for safety
        return False
    same_day = [o for o in active if _days(o) & _days(b)]
    if len(same_day) + 1 > rules.max_per_day:
        return False
    return not any(o.session.department_id == b.session.department_id for o in same_day)


def _days(b: _Booking) -> set[date]:
    return {b.session.day} | ({b.visit.day} if b.visit is not None else set())


def _chronic_no_shows(rng: random.Random, sessions: list[Session], bookings: list[_Booking],
                      stops: dict[str, _Stop], count: int, patients: dict[str, Patient],
                      states: dict[str, _PatientState], until: date, origin: datetime) -> int:
    """`count` patients who miss three general visits on three different days: the third no-show
    bans them (the default rule: three within 90 days). They book nothing else."""
    held: defaultdict[tuple[str, str], int] = defaultdict(int)
    for b in bookings:
        held[(b.session.session_id, b.channel)] += 1
    free = [s for s in sessions if not s.expert and s.session_id not in stops
            and held[(s.session_id, "web")] < s.quota.get("web", 0) and s.opens_at >= origin]
    made = 0
    for i in range(count):
        days = sorted({s.day for s in free})
        if len(days) < 3:
            break
        picks = []
        for day in sorted(rng.sample(days, 3)):
            s = rng.choice([s for s in free if s.day == day])
            picks.append(s)
            free.remove(s)
        ref = f"x{i + 1}"
        patients[ref] = _unique_patient(rng, ref, until, patients)
        first = min(picks, key=lambda s: s.opens_at)
        st = _PatientState(ref, first.opens_at + timedelta(minutes=rng.uniform(5, 120)))
        states[ref] = st
        for s in picks:
            at = st.registered + timedelta(minutes=10) if s is first else \
                s.opens_at + (s.closes_at - s.opens_at) * rng.uniform(0.1, 0.6)
            b = _Booking(f"b{len(bookings) + 1}", s, "web", max(at, st.registered + timedelta(minutes=1)), ref,
                         ends=s.lapse_at, outcome="no_show", visit=s)
            bookings.append(b)
            st.bookings.append(b)
            st.no_shows += 1
        made += 1
    return made


def _book_actions(rng: random.Random, b: _Booking, actions: list[Action]) -> None:
    actions.append(Action(b.at, "book", b.ref, {"patient": b.patient, "session_id": b.session.session_id,
                                                "channel": b.channel, "hospital_id": b.session.hospital_id}))
    visit = b.visit
    if b.outcome == "cancel":
        assert b.ends is not None
        actions.append(Action(b.ends, "cancel", b.ref, {"by": "operator" if b.channel == "phone" else "patient"}))
    elif visit is not None and b.outcome in ("check_in", "refund_checked_in", "refund_paid"):
        earliest = visit.start - timedelta(minutes=40)
        span = (visit.lapse_at - earliest - timedelta(minutes=15)).total_seconds()
        at = earliest + timedelta(seconds=span * rng.random())
        if b.outcome == "refund_paid":
            actions.append(Action(at, "refund", b.ref, {"hospital_id": visit.hospital_id,
                                                        "reason": "患者临时有事，窗口退号"}))
            return
        actions.append(Action(at, "check_in", b.ref, {"hospital_id": visit.hospital_id, "day": visit.day.isoformat()}))
        if b.outcome == "refund_checked_in":
            actions.append(Action(at + timedelta(minutes=rng.uniform(3, 40)), "refund", b.ref,
                                  {"hospital_id": visit.hospital_id, "reason": "取号后不看了，申请退号"}))


def _lapses(bookings: list[_Booking], actions: list[Action]) -> None:
    """One run of booking's lapse timer a minute after each lapse time a booking waits for."""
    due = sorted({b.visit.lapse_at for b in bookings if b.visit is not None and b.outcome == "no_show"})
    for i, at in enumerate(due):
        actions.append(Action(at + timedelta(minutes=1), "lapse", f"l{i + 1}"))
    if bookings:  # and one at the end of the history: nothing planned is left waiting
        last = max(b.session.lapse_at if b.visit is None else b.visit.lapse_at for b in bookings)
        actions.append(Action(last + timedelta(minutes=2), "lapse", "l-end"))


def _visits(rng: random.Random, bookings: list[_Booking], actions: list[Action]) -> None:
    """The HIS's outpatient total of a hospital day (the booking share's denominator), reported that
    evening, for about three days in four: the others show "no data"."""
    checked: defaultdict[tuple[str, date], int] = defaultdict(int)
    for b in bookings:
        if b.visit is not None and b.outcome in ("check_in", "refund_checked_in"):
            checked[(b.visit.hospital_id, b.visit.day)] += 1
    for (hospital_id, day), n in sorted(checked.items()):
        if rng.random() < 0.75:
            visits = round(n / rng.uniform(0.28, 0.45)) + rng.randrange(0, 40)
            at = datetime.combine(day, time(21, 30), HOSPITAL_TZ)
            actions.append(Action(at, "visits", f"v-{hospital_id}-{day.isoformat()}",
                                  {"hospital_id": hospital_id, "day": day.isoformat(), "visits": visits}))
