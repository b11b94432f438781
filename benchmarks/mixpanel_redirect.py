"""Points singer-io's ``tap-mixpanel`` at the fake server; installed into its own venv only.

``tap-mixpanel`` 1.8.0 has no base-URL setting: it hard-codes ``https://mixpanel.com/api/2.0``
(access check, discovery) and ``https://data.mixpanel.com/api/2.0`` (export), with ``eu.``
variants. ``benchmarks/singer_io.py`` copies this file into that venv's site-packages as
``_bench_mixpanel_redirect.py`` next to a ``_bench_mixpanel_redirect.pth`` that imports it at
interpreter start-up. It does nothing unless ``BENCH_MIXPANEL_URL`` is set; then it wraps
``requests.Session.request`` (the one call every request of the tap goes through) so that:

- ``.../api/2.0/export`` on any Mixpanel host goes to ``$BENCH_MIXPANEL_URL/api/2.0/export``
  (the fake server), untouched otherwise: same query, headers, streaming, gzip;
- ``.../api/2.0/engage`` (its start-up access check and the ``engage`` stream) goes to the fake
  server's ``/api/query/engage``, the same endpoint under its documented path: same query
  string (``page_size``, ``session_id``, ``page``), same project-secret auth;
- the metadata endpoints the fake server does not implement are answered locally with
  minimal 200 JSON bodies, without any network: ``engage/properties`` (discovery; names from
  ``BENCH_MIXPANEL_PROFILE_PROPERTIES``, a JSON list) and ``events/properties/top`` (discovery;
  the property names come from ``BENCH_MIXPANEL_EVENT_PROPERTIES``, a JSON list, so discovery
  yields the schema it would for the fake server's events); any other path is a local 404.
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


_FORWARDED = {"/api/2.0/export": "/api/2.0/export", "/api/2.0/engage": "/api/query/engage"}


def _local_answer(url: str, path: str):
    if path == "/api/2.0/engage/properties":
        names = json.loads(os.environ.get("BENCH_MIXPANEL_PROFILE_PROPERTIES", "[]"))
        results = {name: {"count": 1, "type": "string"} for name in names}
        return _stub(url, 200, {"status": "ok", "results": results})
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
                    path, _, query = rest.partition("?")
                    if path not in _FORWARDED:
                        return _local_answer(url, path)
                    url = _TARGET + _FORWARDED[path] + ("?" + query if query else "")
                    break
        return original(self, method, url, *args, **kwargs)

    requests.sessions.Session.request = request


if _TARGET:
    _install()
