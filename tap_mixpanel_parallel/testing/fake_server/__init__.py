"""A fake Mixpanel raw-export server that misbehaves the way the real one does.

Real exports are slow (minutes for a busy day), rate limited (a few queries per second, about 60
per hour, a cap on concurrent queries; over it a 429), streamed as newline-delimited JSON without
any order, sometimes cut mid-body or ended by a last line "export terminated early". A tap only
ever run against a polite mock hides exactly the bugs users of other extractors met, so this
server reproduces those behaviours on loopback, and does so deterministically from a seed: tests
can assert exact outputs, benchmarks can measure parallelism without the network. It is pure
stdlib on purpose, so the test double never shares a bug with the code under test.

Modules: ``config`` (every option, declared once, with its help), ``faults`` (``Faults`` and the
seeded decision), ``data`` (the synthetic events), ``wire`` (HTTP, chunking, gzip, pacing,
cache), ``errors`` (error bodies), ``request`` (one request and its log record), ``export`` (the
endpoint), ``app`` (``FakeMixpanel``: lifecycle, auth, routes), ``cli`` (``python -m`` this
package: serves until SIGTERM/SIGINT and prints ``FAKE_MIXPANEL_URL=...`` once).
"""

from .app import ROUTES, FakeMixpanel
from .cli import main
from .config import ServerConfig
from .data import EVENT_NAMES
from .export import EXPORT_PATH, TERMINATED_EARLY_LINE
from .faults import Faults
from .request import RequestRecord

__all__ = [
    "EVENT_NAMES",
    "EXPORT_PATH",
    "ROUTES",
    "TERMINATED_EARLY_LINE",
    "FakeMixpanel",
    "Faults",
    "RequestRecord",
    "ServerConfig",
    "main",
]
