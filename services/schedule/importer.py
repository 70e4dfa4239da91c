"""Import hospitals, fees, holidays, departments, doctors, weekly plans and one-off sessions from JSON
or CSV files through the schedule service's `import_plan` RPC: the path a hospital's import uses.

    python -m services.schedule.importer demo/hebei-demo.json demo/hebmu4-plan.csv
    python -m services.schedule.importer --hospital hebmu4 --days 14 出诊表.csv

All files of one run are one import: the service checks every record (against what is stored and
the records before it) and stores all of them in one atomic append, or nothing. Refused records
are printed line by line with the field and the reason, and the exit status is 1.

JSON: {"hospitals": [{..., "rules": {...}, "fees": {"主任医师": "50.00", ...},
"holidays": [{"date" | "day_offset", "name"}]}], "departments": [...], "doctors": [{..., "plan":
[{"weekday", "period", "start", "end", "capacity", "quota", "band_minutes"}]}], "sessions": [...],
"horizon": {"from_day": 1, "days": 14}}. A date may be given as `day_offset` from today.

CSV (an 出诊表, one row per weekly slot; UTF-8 or GB18030, headers in Chinese or English):
医院编码 科室编码 科室名称 上级科室编码 医生编码 医生姓名 职称 门诊类型 专长 简介 星期 时段 开始时间
结束时间 号源总数 网络号源 电话号源 窗口号源 分时段分钟. A row without 医生编码 only declares a department,
a row without 星期 only a doctor. 医院编码 may be left out when --hospital is given.

Importing the same files again changes nothing (existing entities that are unchanged are left
alone; the plan's sessions already generated are skipped).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # announced on import; not ours to fix
import eventlet  # noqa: E402

eventlet.monkey_patch()

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from contracts import from_wire  # noqa: E402
from services.schedule.domain import HOSPITAL_TZ  # noqa: E402
from services.schedule.import_files import FileProblem, build  # noqa: E402

RPC_TIMEOUT = 600


def run(paths: list[Path], amqp_uri: str, hospital_id: str | None = None, days: int | None = None,
        from_day: int | None = None) -> int:
    today = datetime.now(HOSPITAL_TZ).date()
    try:
        command = build(paths, today, hospital_id, days, from_day, progress=lambda line: print(line, flush=True))
    except FileProblem as exc:
        print(f"导入失败 / import failed: {exc}", file=sys.stderr)
        return 2
    horizon = (f"，生成 {command['generate_from']} 至 {command['generate_to']} 的出诊"
               if "generate_from" in command else "")
    print(f"校验并导入 {len(command['records'])} 条记录{horizon} / checking and importing …", flush=True)
    started = time.monotonic()
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=RPC_TIMEOUT) as rpc:
        pending = rpc.schedule.import_plan.call_async(command)
        ticker = eventlet.spawn(_tick, started)
        try:
            answer = pending.result()
        finally:
            ticker.kill()
    err = from_wire(answer)
    if err is not None:
        print(f"导入被拒绝 / import refused: {err.message}" + (f" ({err.field})" if err.field else ""),
              file=sys.stderr)
        return 2
    return report(answer, time.monotonic() - started)


def report(answer: dict[str, Any], seconds: float) -> int:
    for problem in answer.get("rejected", []):
        where = f" [{problem['field']}]" if problem.get("field") else ""
        print(f"拒绝 / rejected  {problem['line']}  {problem['kind']}{where}: {problem['message']}", file=sys.stderr)
    if not answer["ok"]:
        print(f"{len(answer['rejected'])} 条记录被拒绝，未导入任何内容 / {len(answer['rejected'])} record(s) "
              "rejected, nothing was imported", file=sys.stderr)
        return 1
    notices = answer.get("notices", [])
    for notice in notices[:20]:
        print(f"提示 / notice    {notice['line']}: {notice['message']}")
    if len(notices) > 20:
        print(f"… 另有 {len(notices) - 20} 条提示 / {len(notices) - 20} more notices")
    created = ", ".join(f"{k} {v}" for k, v in sorted(answer.get("created", {}).items())) or "-"
    changed = ", ".join(f"{k} {v}" for k, v in sorted(answer.get("changed", {}).items())) or "-"
    again = "（重复导入，结果同上次）/ a repeat: the same answer as before" if answer.get("duplicate") else ""
    print(f"导入完成 / imported in {seconds:.1f}s {again}\n  新建 created: {created}\n  更新 changed: {changed}\n"
          f"  未变 unchanged: {answer.get('unchanged', 0)}\n  生成出诊 sessions generated: "
          f"{answer.get('sessions_generated', 0)}")
    return 0


def _tick(started: float) -> None:
    while True:
        eventlet.sleep(5)
        print(f"  … 仍在处理 / still working ({time.monotonic() - started:.0f}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--hospital", help="hospital_id for CSV files without a 医院编码 column")
    parser.add_argument("--days", type=int, help="generate the weekly plans' sessions for N days")
    parser.add_argument("--from-day", type=int, help="… starting N days from today (default 1: tomorrow)")
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args(argv)
    return run(args.files, args.amqp, args.hospital, args.days, args.from_day)


if __name__ == "__main__":
    sys.exit(main())
