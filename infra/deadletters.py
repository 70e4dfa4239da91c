"""Operator view of parked messages: list them, or move them back for another try.

    python -m infra.deadletters list
    python -m infra.deadletters requeue <queue>.dead
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from typing import Any

import pika


def _management_queues() -> list[str] | None:
    url = os.environ.get("RABBITMQ_API", "http://127.0.0.1:15672/api/queues")
    try:
        req = urllib.request.Request(url)
        auth = "Basic Z3Vlc3Q6Z3Vlc3Q="  # guest:guest, the local development broker only
        req.add_header("Authorization", auth)
        with urllib.request.urlopen(req, timeout=2) as resp:
            return [q["name"] for q in json.load(resp)]
    except Exception:
        return None


def dead_queues(channel: Any, candidates: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for name in candidates:
        if not name.endswith(".dead"):
            continue
        try:
            ok = channel.queue_declare(queue=name, passive=True)
            found[name] = ok.method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            channel = channel.connection.channel()
    return found


def peek(channel: Any, queue: str, limit: int = 20) -> list[dict[str, Any]]:
    """Read up to `limit` parked messages without removing them."""
    out = []
    tags = []
    for _ in range(limit):
        method, props, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            break
        tags.append(method.delivery_tag)
        out.append({"headers": props.headers or {}, "body": json.loads(body or b"null")})
    for tag in tags:
        channel.basic_nack(delivery_tag=tag, requeue=True)
    return out


def requeue(channel: Any, dead_queue: str) -> int:
    target = dead_queue.removesuffix(".dead")
    moved = 0
    while True:
        method, props, body = channel.basic_get(queue=dead_queue, auto_ack=False)
        if method is None:
            return moved
        headers = dict(props.headers or {})
        headers.pop("x-appt-attempt", None)
        channel.basic_publish(
            exchange="",
            routing_key=target,
            body=body,
            properties=pika.BasicProperties(
                content_type=props.content_type, delivery_mode=2, headers=headers
            ),
        )
        channel.basic_ack(method.delivery_tag)
        moved += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["list", "requeue"])
    parser.add_argument("queue", nargs="?")
    parser.add_argument("--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args(argv)
    conn = pika.BlockingConnection(pika.URLParameters(args.amqp))
    channel = conn.channel()
    try:
        if args.action == "requeue":
            if not args.queue:
                parser.error("requeue needs the name of a .dead queue")
            print(f"moved {requeue(channel, args.queue)} message(s) back to {args.queue.removesuffix('.dead')}")
            return 0
        names = [args.queue] if args.queue else (_management_queues() or [])
        if not names:
            print("no queue list: give a queue name, or enable rabbitmq_management", file=sys.stderr)
            return 1
        for name, count in sorted(dead_queues(channel, names).items()):
            print(f"{name}\t{count}")
            for msg in peek(channel, name, 5):
                body = msg["body"] if isinstance(msg["body"], dict) else {}
                error = msg["headers"].get("x-appt-error", "?")
                print(f"    {body.get('type', '?')} {body.get('event_id', '?')}: {error}")
        return 0
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
