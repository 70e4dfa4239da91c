"""Load a hospital's departments, doctors and sessions from a JSON file through the schedule
service's own RPC commands (the path a hospital's import uses), printing progress.

    python -m services.schedule.importer demo/walking-skeleton.json

Idempotency keys are derived from the ids, so importing the same file again changes nothing.
A session's date may be given as `date` or as `day_offset` from today.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # announced on import; not ours to fix
import eventlet  # noqa: E402

eventlet.monkey_patch()

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from contracts import from_wire  # noqa: E402

STEPS = (
    ("hospitals", "register_hospital", "hospital_id"),
    ("departments", "create_department", "department_id"),
    ("doctors", "register_doctor", "doctor_id"),
    ("sessions", "schedule_session", "session_id"),
)


def commands(data: dict[str, Any], today: date) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for section, method, key in STEPS:
        for item in data.get(section, []):
            payload = dict(item)
            if "day_offset" in payload:
                payload["date"] = (today + timedelta(days=int(payload.pop("day_offset")))).isoformat()
            payload["idempotency_key"] = f"import:{method}:{payload.get(key)}:{payload.get('date', '')}"
            out.append((method, payload))
    return out


def run(path: Path, amqp_uri: str) -> int:
    data = json.loads(path.read_text(encoding="utf-8"))
    todo = commands(data, date.today())
    refused = 0
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as rpc:
        for i, (method, payload) in enumerate(todo, 1):
            answer = getattr(rpc.schedule, method)(payload)
            err = from_wire(answer)
            if err is not None and err.code != "conflict":
                refused += 1
                print(f"[{i}/{len(todo)}] {method} {payload.get('session_id') or ''} refused: {err.message}",
                      file=sys.stderr)
            elif i % 50 == 0 or i == len(todo):
                print(f"[{i}/{len(todo)}] imported")
    return 1 if refused else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args(argv)
    return run(args.file, args.amqp)


if __name__ == "__main__":
    sys.exit(main())
