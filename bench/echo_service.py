"""The baseline for gateway benches: a nameko @http that answers at once, and one that makes a
single RPC to an echo service through the same broker. Run as two processes by bench/rpc_echo.py."""

from __future__ import annotations

from typing import Any

from nameko.rpc import RpcProxy, rpc
from nameko.web.handlers import http


class EchoService:
    name = "bench_echo"

    @rpc
    def echo(self, value: Any) -> Any:
        return value


class EchoGateway:
    name = "bench_echo_gateway"

    echo_rpc = RpcProxy("bench_echo")

    @http("GET", "/plain")
    def plain(self, request: Any) -> str:
        return "ok"

    @http("POST", "/plain")
    def plain_post(self, request: Any) -> str:
        request.get_data()  # read like the echo reads it, then answer at once: no RPC
        return "ok"

    @http("GET", "/echo")
    def echo(self, request: Any) -> str:
        return str(self.echo_rpc.echo("ok"))

    @http("POST", "/echo")
    def echo_post(self, request: Any) -> str:
        return str(self.echo_rpc.echo(request.get_data(as_text=True)))
