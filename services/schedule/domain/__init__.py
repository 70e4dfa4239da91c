"""Schedule rules, pure: state folded from events, decisions returning new events.

No nameko, no database, no clock: `now` is always passed in (hospital local time, Asia/Shanghai).
A decision that touches several aggregates works on a `ScheduleWorld` (infra.decisions.World):
the streams loaded for it plus what it has staged so far, so that a later step of the same
decision sees an earlier one. It never reads the store; the unit of work loads what it asks for.

    state.py      stream names, folds (Entity, Hospital, Session, DoctorSessions), ScheduleWorld
    rules.py      authorisation, session shape and time bands, fees, booking windows
    hospitals.py  hospitals, departments, doctors, the weekly plan
    holidays.py   holidays: declaring one stops the day's sessions (after confirmation), cancelling one
    sessions.py   one-off sessions, generation from the weekly plans, quota
    stops.py      doctor stops (停诊) and replacement sessions (补诊)
    imports.py    the all-or-nothing import engine
"""

from services.schedule.domain.holidays import (
    cancel_holiday,
    check_stop_confirmation,
    holiday_preview,
    holiday_stop_reason,
    stage_holiday,
    stopped_by_holiday,
)
from services.schedule.domain.hospitals import (
    change_booking_rules,
    change_fee,
    create_department,
    declare_holiday,
    plan_slot_problems,
    register_doctor,
    register_hospital,
    set_weekly_plan,
    update_department,
    update_doctor,
    update_hospital,
)
from services.schedule.domain.imports import import_plan
from services.schedule.domain.rules import (
    SessionRequest,
    authorize_hospital_change,
    authorize_hospital_settings,
    authorize_platform,
    authorize_stop_decision,
    booking_status,
    booking_window,
    check_session_shape,
    clinic_type_of,
    equal_time_bands,
    fee_class_of,
    fee_for,
    resolve_time_bands,
)
from services.schedule.domain.sessions import (
    MAX_GENERATION_DAYS,
    change_session_quota,
    check_horizon,
    generate_for_doctor,
    generate_sessions,
    generation_streams,
    schedule_session,
    stage_one_off_session,
)
from services.schedule.domain.state import (
    HOSPITAL_TZ,
    PERIOD_CODES,
    PERIOD_NAMES,
    WEEKDAY_NAMES,
    DoctorSessions,
    Entity,
    Hospital,
    ScheduleWorld,
    Session,
    department_stream,
    doctor_sessions_stream,
    doctor_stream,
    generation_stream,
    hospital_stream,
    import_stream,
    plan_session_id,
    session_stream,
)
from services.schedule.domain.stops import (
    approve_doctor_stop,
    reject_doctor_stop,
    request_doctor_stop,
    stage_stop_without_replacement,
    withdraw_doctor_stop,
)

__all__ = [
    "HOSPITAL_TZ",
    "MAX_GENERATION_DAYS",
    "PERIOD_CODES",
    "PERIOD_NAMES",
    "WEEKDAY_NAMES",
    "DoctorSessions",
    "Entity",
    "Hospital",
    "ScheduleWorld",
    "Session",
    "SessionRequest",
    "approve_doctor_stop",
    "authorize_hospital_change",
    "authorize_hospital_settings",
    "authorize_platform",
    "authorize_stop_decision",
    "booking_status",
    "booking_window",
    "cancel_holiday",
    "change_booking_rules",
    "change_fee",
    "change_session_quota",
    "check_horizon",
    "check_session_shape",
    "check_stop_confirmation",
    "clinic_type_of",
    "create_department",
    "declare_holiday",
    "department_stream",
    "doctor_sessions_stream",
    "doctor_stream",
    "equal_time_bands",
    "fee_class_of",
    "fee_for",
    "generate_for_doctor",
    "generate_sessions",
    "generation_stream",
    "generation_streams",
    "holiday_preview",
    "holiday_stop_reason",
    "hospital_stream",
    "import_plan",
    "import_stream",
    "plan_session_id",
    "plan_slot_problems",
    "register_doctor",
    "register_hospital",
    "reject_doctor_stop",
    "withdraw_doctor_stop",
    "request_doctor_stop",
    "resolve_time_bands",
    "schedule_session",
    "session_stream",
    "set_weekly_plan",
    "stage_holiday",
    "stage_one_off_session",
    "stage_stop_without_replacement",
    "stopped_by_holiday",
    "update_department",
    "update_doctor",
    "update_hospital",
]
