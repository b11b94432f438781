"""The command line: flags derived from ``ServerConfig`` and ``Faults``, plus the account pair.

Prints ``FAKE_MIXPANEL_URL=...`` once, then serves until SIGTERM/SIGINT, for benchmarks and
demos that drive the tap as a subprocess.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from .app import FakeMixpanel
from .config import DEFAULT_SERVICE_ACCOUNT, ServerConfig
from .faults import Faults
from .options import add_arguments, values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tap_mixpanel_parallel.testing.fake_server",
        description="Serve a fake Mixpanel export API until SIGTERM/SIGINT.",
    )
    server = parser.add_argument_group("server")
    add_arguments(server, ServerConfig)
    # The one service account is a pair in ServerConfig, two flags here.
    user, secret = DEFAULT_SERVICE_ACCOUNT
    server.add_argument("--username", default=None, help=f"service account (default {user})")
    server.add_argument("--secret", default=None, help=f"service account secret ({secret})")
    add_arguments(parser.add_argument_group("faults"), Faults)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """``--api-secret`` alone means a legacy-only project: no service account is accepted."""
    service_account: tuple[str, str] | None = (
        args.username or DEFAULT_SERVICE_ACCOUNT[0],
        args.secret or DEFAULT_SERVICE_ACCOUNT[1],
    )
    if args.api_secret is not None and args.username is None and args.secret is None:
        service_account = None
    return ServerConfig(
        **values(ServerConfig, args),
        service_account=service_account,
        faults=Faults(**values(Faults, args)),
    )


def main(argv: list[str] | None = None) -> int:
    server = FakeMixpanel(config_from_args(build_parser().parse_args(argv)))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"FAKE_MIXPANEL_URL={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0
