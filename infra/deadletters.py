"""Operator view of parked messages: list them, or move them back for another try.

    python -m infra.deadletters list                  # every service's .dead queues with a count
    python -m infra.deadletters list <queue>.dead      # one queue, its first messages
    python -m infra.deadletters requeue <queue>.dead

No management plugin is needed: the queue names are derived from every service's application
table (`services/<name>/handlers.py` `APP`, infra.application), named as nameko names an event
handler's queue, and each `<queue>.dead` is passive-declared (nothing is created). The gateway's
operator page (/ops) does the same through these functions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import sys
from typing import Any

import pika
import pika.exceptions

from infra.handling import ATTEMPT_HEADER, ERROR_HEADER, TRANSIENT_HEADER, dead_queue_name
from infra.health import dead_letter_counts
from infra.logging import mask_text
from infra.queues import amqp_parameters


def service_applications() -> dict[str, Any]:
    """Every service's Application (services/<name>/handlers.py `APP`), by service name."""
    import services
    from infra.application import Application

    found: dict[str, Any] = {}
    for module in pkgutil.iter_modules(services.__path__):
        try:
            handlers = importlib.import_module(f"services.{module.name}.handlers")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.{module.name}.handlers":
                raise
            continue
        app = getattr(handlers, "APP", None)
        if isinstance(app, Application) and app.reactions:
            found[app.service] = app
    return found


def candidate_queues() -> dict[str, list[str]]:
    """Per service, the `.dead` queue of each of its reactions."""
    return {name: [dead_queue_name(q) for q in app.event_queues()]
            for name, app in sorted(service_applications().items())}


def dead_queues(connection: Any, candidates: list[str]) -> dict[str, int]:
    """The candidates that exist, with their message counts."""
    counts = dead_letter_counts(connection, [c for c in candidates if c.endswith(".dead")])
    return {name: n for name, n in counts.items() if n is not None}


def peek(channel: Any, queue: str, limit: int = 20) -> list[dict[str, Any]]:
    """Read up to `limit` parked messages without removing them (each goes back unacked)."""
    out = []
    tags = []
    for _ in range(limit):
        method, props, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            break
        tags.append(method.delivery_tag)
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            parsed = None
        out.append({"headers": props.headers or {}, "body": parsed})
    for tag in tags:
        channel.basic_nack(delivery_tag=tag, requeue=True)
    return out


# pydantic quotes the input it refused: a name could be in it, the log masker knows only IDs and phones.
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=|\]|$)", re.M)


def summary(message: dict[str, Any]) -> dict[str, Any]:
    """What an operator may see of a parked message: its type, ids and error, never its data
    (an event's data can hold a patient's name or phone); the error was masked when parked and
    is masked again here."""
    body = message["body"] if isinstance(message["body"], dict) else {}
    headers = message["headers"]
    error = _INPUT_VALUE.sub("input_value=…", mask_text(str(headers.get(ERROR_HEADER) or "?")))
    lines = [line.strip() for line in error.splitlines()
             if line.strip() and not line.strip().startswith("For further information")]
    return {"type": str(body.get("type", "?"))[:100], "event_id": str(body.get("event_id", "?"))[:64],
            "stream": mask_text(str(body.get("stream", "")))[:120], "error": " · ".join(lines[:3])[:300],
            "attempts": headers.get(ATTEMPT_HEADER), "failed_at": headers.get("x-appt-failed-at")}


def requeue(channel: Any, dead_queue: str) -> int:
    """Move the messages parked in `dead_queue` back to the queue they came from, each published
    (with broker confirms) before it is acked here: a crash in between doubles, never loses
    (consumers are idempotent). Only as many as were parked when it started: a message that
    fails again and is parked anew waits for the next requeue instead of looping."""
    if not dead_queue.endswith(".dead"):
        raise ValueError(f"{dead_queue} is not a dead-letter queue")
    target = dead_queue.removesuffix(".dead")
    waiting = int(channel.queue_declare(queue=dead_queue, passive=True).method.message_count)
    channel.confirm_delivery()
    moved = 0
    while moved < waiting:
        method, props, body = channel.basic_get(queue=dead_queue, auto_ack=False)
        if method is None:
            break
        headers = dict(props.headers or {})
        for spent in (ATTEMPT_HEADER, TRANSIENT_HEADER):
            headers.pop(spent, None)
        channel.basic_publish(
            exchange="",
            routing_key=target,
            body=body,
            properties=pika.BasicProperties(
                content_type=props.content_type, content_encoding=props.content_encoding, delivery_mode=2,
                headers=headers, message_id=props.message_id, correlation_id=props.correlation_id,
            ),
        )
        channel.basic_ack(method.delivery_tag)
        moved += 1
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["list", "requeue"])
    parser.add_argument("queue", nargs="?")
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--all", action="store_true", help="list empty queues too")
    args = parser.parse_args(argv)
    conn = pika.BlockingConnection(amqp_parameters(args.amqp))
    channel = conn.channel()
    try:
        if args.action == "requeue":
            if not args.queue:
                parser.error("requeue needs the name of a .dead queue")
            print(f"moved {requeue(channel, args.queue)} message(s) back to {args.queue.removesuffix('.dead')}")
            return 0
        names = [args.queue] if args.queue else [q for qs in candidate_queues().values() for q in qs]
        for name, count in sorted(dead_queues(conn, names).items()):
            if not count and not args.all and not args.queue:
                continue
            print(f"{name}\t{count}")
            for msg in peek(channel, name, 5):
                s = summary(msg)
                print(f"    {s['type']} {s['event_id']}: {s['error']}")
        return 0
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
