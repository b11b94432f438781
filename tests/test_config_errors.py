"""An invalid config stops the real CLI before any request, naming the setting.

One bad value (at least) per setting of the README's settings table, plus the auth mix-ups.
The runs are independent subprocesses, so they go a few at a time to keep the file quick.
"""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor

from tests.helpers import SECRET, base_config

DROP = object()
JSONL = {"format": "jsonl", "compression": "gzip"}
STORE = {"root": "file:///tmp/tap-mixpanel-parallel-test-batches"}

# (setting the message must name, overrides of base_config)
CASES = [
    ("service_account_username", {"service_account_username": ""}),
    ("service_account_secret", {"service_account_secret": ""}),
    ("service_account_secret", {"service_account_secret": [SECRET]}),  # a secret of wrong type
    (
        "service_account_username",
        {"service_account_username": DROP, "service_account_secret": DROP},
    ),
    ("api_secret", {"api_secret": "legacy-secret"}),  # both auth methods at once
    (
        "api_secret",
        {"api_secret": 12345, "service_account_username": DROP, "service_account_secret": DROP},
    ),
    ("project_id", {"project_id": DROP}),
    ("project_id", {"project_id": 0}),
    ("region", {"region": "mars", "api_url": DROP}),
    ("api_url", {"api_url": "ftp://example.com"}),
    ("start_date", {"start_date": DROP}),
    ("start_date", {"start_date": "not-a-date"}),
    ("start_date", {"start_date": "2999-01-01", "end_date": DROP}),
    ("end_date", {"end_date": "2024-13-45"}),
    ("end_date", {"end_date": "2023-12-31"}),  # before start_date
    ("project_timezone", {"project_timezone": "Mars/Olympus_Mons"}),
    ("partition_days", {"partition_days": 101}),
    ("partition_mode", {"partition_mode": "weekly"}),
    ("max_workers", {"max_workers": 0}),
    ("max_workers", {"max_workers": "ten"}),
    ("max_requests_per_second", {"max_requests_per_second": 0}),
    ("max_requests_per_hour", {"max_requests_per_hour": 0}),
    ("lookback_days", {"lookback_days": -1}),
    ("event_names", {"event_names": "Login"}),
    ("event_names", {"event_names": [""]}),
    ("where", {"where": 5}),
    ("time_in_ms", {"time_in_ms": "yes"}),
    ("request_timeout", {"request_timeout": 0}),
    ("max_retries", {"max_retries": -1}),
    ("sanitize_text", {"sanitize_text": "yes"}),
    # the SDK's batch_config: its schema, then what the SDK itself would fail on
    ("batch_config", {"batch_config": {"encoding": {"format": "csv"}}}),
    ("batch_config", {"batch_config": {"encoding": {"format": "parquet"}, "storage": STORE}}),
    ("batch_config", {"batch_config": {"encoding": JSONL, "storage": STORE, "batch_size": 0}}),
    ("batch_config", {"batch_config": {"encoding": JSONL}}),
    ("batch_config", {"batch_config": {"storage": STORE}}),
    ("batch_config", {"batch_config": {"encoding": JSONL, "storage": STORE, "size": 5}}),
    (
        "batch_config",
        {"batch_config": {"encoding": JSONL, "storage": {"root": "file:///dev/null/batches"}}},
    ),
    # settings of earlier versions that batch_config replaced
    ("batch_messages", {"batch_messages": True}),
    ("batch_dir", {"batch_dir": "/tmp/batches"}),
]


def _config(server, overrides):
    config = base_config(server, start_date="2024-01-01", end_date="2024-01-14")
    for key, value in overrides.items():
        if value is DROP:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def _problems(setting, overrides, run):
    problems = []
    if run.returncode == 0:
        problems.append("exit code 0")
    if any(m["type"] in ("RECORD", "STATE") for m in run.messages):
        problems.append("emitted records or state")
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    naming = re.compile(rf"\b{setting}\b")
    if not any(naming.search(line) for line in errors):
        problems.append(f"no error line names {setting}: {errors}")
    if SECRET in run.stdout + run.stderr:
        problems.append("the secret is in the output")
    if problems:
        return f"{setting} {overrides}: " + "; ".join(problems)
    return None


def test_every_setting_rejects_its_bad_values_before_any_request(fake_server, run_tap):
    server = fake_server(start=dt.date(2024, 1, 1), days=14, events_per_day=1)
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(pool.map(lambda case: run_tap(_config(server, case[1])), CASES))
    problems = [
        p
        for (setting, overrides), run in zip(CASES, runs, strict=True)
        if (p := _problems(setting, overrides, run))
    ]
    assert not problems, "\n".join(problems)
    assert server.requests_log == [], "a request was made with an invalid config"
    # every setting of the README's table is covered
    covered = {setting for setting, _ in CASES}
    assert covered >= {
        "service_account_username",
        "service_account_secret",
        "project_id",
        "api_secret",
        "region",
        "api_url",
        "start_date",
        "end_date",
        "project_timezone",
        "partition_days",
        "max_workers",
        "max_requests_per_second",
        "max_requests_per_hour",
        "lookback_days",
        "event_names",
        "where",
        "time_in_ms",
        "request_timeout",
        "max_retries",
    }


def test_a_valid_config_does_make_requests(fake_server, run_tap):
    """The control: the same base config, unchanged, runs (so the rejections above are real)."""
    server = fake_server(start=dt.date(2024, 1, 1), days=14, events_per_day=1)
    run = run_tap(_config(server, {}))
    assert run.returncode == 0, run.stderr[-2000:]
    assert server.requests_log
    assert SECRET not in run.stdout + run.stderr
