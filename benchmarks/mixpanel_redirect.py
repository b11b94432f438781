"""Points singer-io's ``tap-mixpanel`` at the fake server; installed into its own venv only.

``tap-mixpanel`` 1.8.0 has no base-URL setting: it hard-codes ``https://mixpanel.com/api/2.0``
(access check, discovery) and ``https://data.mixpanel.com/api/2.0`` (export), with ``eu.``
variants. ``benchmarks/singer_io.py`` copies this file into that venv's site-packages as
``_bench_mixpanel_redirect.py`` next to a ``_bench_mixpanel_redirect.pth`` that imports it at
interpreter start-up. It does nothing unless ``BENCH_MIXPANEL_URL`` is set; then it wraps
``requests.Session.request`` (the one call every request of the tap goes through) so that:

- ``.../api/2.0/export`` on any Mixpanel host goes to ``$BENCH_MIXPANEL_URL/api/2.0/export``
  (the fake server), untouched otherwise: same query, headers, streaming, gzip;
- the metadata endpoints the fake server does not implement are answered locally with
  minimal 200 JSON bodies, without any network: ``engage`` (the start-up access check),
  ``engage/properties`` (discovery) and ``events/properties/top`` (discovery; the property
  names come from ``BENCH_MIXPANEL_EVENT_PROPERTIES``, a JSON list, so discovery yields the
  schema it would for the fake server's events); any other path is a local 404.
"""

from __future__ import annotations

import json
import os

_TARGET = os.environ.get("BENCH_MIXPANEL_URL", "").rstrip("/")
_HOSTS = (
    "https://data.mixpanel.com",
    "https://data-eu.mixpanel.com",
    "https://mixpanel.com",
    "https://eu.mixpanel.com",
)


def _stub(url: str, status: int, body: object):
    import requests

    response = requests.Response()
    response.status_code = status
    response.url = url
    response.reason = "OK" if status == 200 else "Not Found"
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps(body).encode()
    return response


def _local_answer(url: str, path: str):
    if path == "/api/2.0/engage":
        return _stub(url, 200, {"status": "ok", "results": [], "page": 0, "total": 0})
    if path == "/api/2.0/engage/properties":
        return _stub(url, 200, {"status": "ok", "results": {}})
    if path == "/api/2.0/events/properties/top":
        names = json.loads(os.environ.get("BENCH_MIXPANEL_EVENT_PROPERTIES", "[]"))
        return _stub(url, 200, {name: {"count": 1} for name in names})
    return _stub(url, 404, {"error": "not served by the benchmark", "status": "error"})


def _install() -> None:
    import requests.sessions

    original = requests.sessions.Session.request

    def request(self, method, url, *args, **kwargs):
        if isinstance(url, str):
            for host in _HOSTS:
                if url.startswith(host + "/"):
                    rest = url[len(host) :]
                    path = rest.split("?", 1)[0]
                    if path != "/api/2.0/export":
                        return _local_answer(url, path)
                    url = _TARGET + rest
                    break
        return original(self, method, url, *args, **kwargs)

    requests.sessions.Session.request = request


if _TARGET:
    _install()
