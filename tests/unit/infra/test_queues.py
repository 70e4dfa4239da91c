"""Every durable queue of the platform is a quorum queue, and every service declares its RPC queue
and its reply queues through infra.rpc (infra/queues.py, infra/rpc.py)."""

from __future__ import annotations

import importlib
import inspect

import nameko.rpc
import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

import infra.rpc
from infra.queues import SERVICES, platform_queues

pytestmark = pytest.mark.unit


def _service_classes() -> list[type]:
    out = []
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.service")
        out += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                if cls.__module__ == module.__name__ and isinstance(getattr(cls, "name", None), str)]
    return out


def test_every_durable_queue_is_a_quorum_queue() -> None:
    queues = platform_queues()
    names = {q.name for q in queues}
    assert {f"rpc-{s}" for s in ("schedule", "booking", "notification", "his_sync", "stats")} <= names
    assert "evt-booking-AppointmentBooked--notification.confirm_booking" in names
    for q in queues:
        assert q.durable and not q.auto_delete and not q.exclusive, q.name
        assert q.queue_arguments["x-queue-type"] == "quorum", q.name
        assert "x-delivery-limit" not in q.queue_arguments  # a limit would drop redelivered requests
    retry = next(q for q in queues if q.name.endswith(".retry"))
    assert retry.queue_arguments["x-dead-letter-routing-key"] == retry.name.removesuffix(".retry")
    assert retry.queue_arguments["x-dead-letter-strategy"] == "at-least-once"
    assert retry.queue_arguments["x-overflow"] == "reject-publish"


def test_services_use_infra_rpc_not_nameko_rpc() -> None:
    """nameko's own rpc would declare `rpc-<service>` classic (406 against the quorum queue), and its
    RpcProxy a durable reply queue that ties the caller to one cluster node."""
    for cls in _service_classes():
        for name, member in inspect.getmembers(cls):
            for entrypoint in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, nameko.rpc.Rpc):
                    assert isinstance(entrypoint, infra.rpc.Rpc), f"{cls.__name__}.{name} uses nameko.rpc.rpc"
            if isinstance(member, nameko.rpc.RpcProxy):
                assert isinstance(member, infra.rpc.RpcProxy), f"{cls.__name__}.{name} is nameko's RpcProxy"
