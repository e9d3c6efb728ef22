"""Running aiohttp apps until SIGINT/SIGTERM, and logging set-up."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import sys

from aiohttp import web

from kit.web import SafeAccessLogger


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # These libraries are chatty at INFO about every packet and connection.
    for noisy in ("amqtt", "transitions", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (the ignition going off ends in SIGTERM)."""
    ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, ev.set)
    return ev


async def start_site(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log_class=SafeAccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=5.0, ssl_context=ssl_context)
    await site.start()
    return runner


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
