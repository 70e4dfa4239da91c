"""his_sync: what a hospital's HIS reports to the platform.

`OutpatientVisitsReported`: the day's outpatient visits of a hospital as its HIS counts them, the
denominator of the booking share (预约诊疗率). A later report of the same day is a correction: the
latest one counts (a new event, never an edit).
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from contracts.envelope import Event


class OutpatientVisitsReported(Event):
    hospital_id: str
    date: date
    visits: int = Field(ge=0, le=10_000_000)
    reported_by: str = Field(min_length=1, max_length=64, description="the HIS's sending facility")
