"""Settings: one-line errors naming the setting, before any request."""

from __future__ import annotations

import datetime as dt

import pytest

from tap_mixpanel_parallel.settings import (
    Settings,
    SettingsError,
    batch_target,
    parse_day,
    today_in,
)

BASE = {
    "service_account_username": "svc",
    "service_account_secret": "s3cr3t-value",
    "project_id": 42,
    "start_date": "2024-01-01",
}


def test_defaults():
    s = Settings.from_config(BASE)
    assert s.export_url == "https://data.mixpanel.com/api/2.0/export"
    assert (s.partition_days, s.max_workers, s.lookback_days, s.max_retries) == (7, 10, 5, 5)
    assert s.max_requests_per_second == 3.0 and s.max_requests_per_hour == 60
    assert s.project_timezone.key == "UTC"
    assert s.authorization.startswith("Basic ")
    assert "s3cr3t-value" not in repr(s)
    assert s.authorization not in repr(s)
    # RECORD messages unless batch_config is set; NULs and invalid UTF-8 cleaned
    assert s.batch is None
    assert s.sanitize_text is True


@pytest.mark.parametrize(
    ("region", "host"),
    [("us", "data.mixpanel.com"), ("eu", "data-eu.mixpanel.com"), ("in", "data-in.mixpanel.com")],
)
def test_regions(region, host):
    assert Settings.from_config({**BASE, "region": region}).export_url == (
        f"https://{host}/api/2.0/export"
    )


def test_api_url_wins_and_legacy_secret():
    s = Settings.from_config(
        {"api_secret": "legacy", "start_date": "2024-01-01", "api_url": "http://127.0.0.1:9/"}
    )
    assert s.export_url == "http://127.0.0.1:9/api/2.0/export"
    assert s.project_id is None


@pytest.mark.parametrize(
    ("patch", "setting"),
    [
        ({"service_account_username": None}, "service_account_username"),
        ({"service_account_secret": None}, "service_account_secret"),
        ({"project_id": None}, "project_id"),
        ({"project_id": "abc"}, "project_id"),
        ({"project_id": 0}, "project_id"),
        ({"api_secret": "x"}, "api_secret"),
        ({"region": "mars"}, "region"),
        ({"api_url": "ftp://x"}, "api_url"),
        ({"start_date": "soon"}, "start_date"),
        ({"start_date": None}, "start_date"),
        ({"start_date": "2999-01-01"}, "start_date"),
        ({"end_date": "2023-01-01"}, "start_date"),
        ({"end_date": "31/12/2024"}, "end_date"),
        ({"project_timezone": "Mars/Olympus"}, "project_timezone"),
        ({"partition_days": 0}, "partition_days"),
        ({"partition_days": 101}, "partition_days"),
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": 1.5}, "max_workers"),
        ({"max_requests_per_second": 0}, "max_requests_per_second"),
        ({"max_requests_per_hour": 0}, "max_requests_per_hour"),
        ({"lookback_days": -1}, "lookback_days"),
        ({"event_names": "Purchase"}, "event_names"),
        ({"event_names": [""]}, "event_names"),
        ({"request_timeout": -5}, "request_timeout"),
        ({"max_retries": True}, "max_retries"),
    ],
)
def test_bad_values_name_the_setting(patch, setting):
    with pytest.raises(SettingsError) as info:
        Settings.from_config({**BASE, **patch})
    message = str(info.value)
    assert message.startswith(f"{setting}:")
    assert "\n" not in message
    assert "s3cr3t-value" not in message


def test_no_credentials():
    with pytest.raises(SettingsError, match="no credentials"):
        Settings.from_config({"start_date": "2024-01-01"})


@pytest.mark.parametrize(
    "value",
    ["2024-01-01", "2024-01-01T00:00:00Z", "2024-01-01T23:59:59+05:00", "2024-01-01T00:00:00"],
)
def test_start_date_forms(value):
    assert parse_day(value, "start_date") == dt.date(2024, 1, 1)


def test_end_is_clamped_to_today():
    s = Settings.from_config({**BASE, "end_date": "2024-02-01"})
    assert s.end_for(dt.date(2024, 1, 15)) == dt.date(2024, 1, 15)
    assert s.end_for(dt.date(2024, 3, 1)) == dt.date(2024, 2, 1)
    assert Settings.from_config(BASE).end_for(dt.date(2024, 3, 1)) == dt.date(2024, 3, 1)


def test_today_is_in_the_project_timezone():
    from zoneinfo import ZoneInfo

    now = dt.datetime(2024, 1, 1, 23, 30, tzinfo=dt.timezone.utc)
    assert today_in(ZoneInfo("UTC"), now) == dt.date(2024, 1, 1)
    assert today_in(ZoneInfo("Asia/Tokyo"), now) == dt.date(2024, 1, 2)
    assert today_in(ZoneInfo("America/Los_Angeles"), now) == dt.date(2024, 1, 1)


def test_secrets_cover_the_header_and_its_token():
    import base64

    s = Settings.from_config(BASE)
    token = base64.b64encode(b"svc:s3cr3t-value").decode()
    assert set(s.secrets) == {"s3cr3t-value", f"Basic {token}", token}


def batch(root: str, **extra):
    return {"encoding": {"format": "jsonl", **extra}, "storage": {"root": root}}


def test_batch_config_local_roots_become_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for root in (
        (tmp_path / "a").as_uri(),
        f"file://localhost{tmp_path}/a",
        str(tmp_path / "a"),
        "a",  # relative to the working directory
        "file://a",  # the SDK's docs write relative roots so
    ):
        target = batch_target({"batch_config": batch(root)})
        assert target is not None
        assert (target.protocol, target.root, target.local) == ("file", str(tmp_path / "a"), True)
        assert target.url == (tmp_path / "a").as_uri()
        assert (target.compression, target.max_records, target.prefix) == (None, 10000, "")


def test_batch_config_remote_root_keeps_its_options_out_of_repr():
    raw = batch("s3://bucket/some/prefix/", compression="gzip")
    raw["storage"]["params"] = {"key": "AKIA-x", "secret": "very-secret"}
    raw["storage"]["prefix"] = "mp-"
    raw["batch_size"] = 7
    target = batch_target({"batch_config": raw})
    assert target is not None
    assert (target.protocol, target.root, target.url) == (
        "s3",
        "bucket/some/prefix",
        "s3://bucket/some/prefix",
    )
    assert (target.compression, target.max_records, target.prefix) == ("gzip", 7, "mp-")
    assert "very-secret" not in repr(target)
    assert batch_target({"batch_config": {}}) is None
    assert batch_target({}) is None


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("s3://bucket", "must be an object"),
        (batch("gcs://bucket/x"), "install the fsspec implementation of gcs://"),
        (batch("s3://"), "names no bucket"),
        (batch("nosuch://b/x"), "not a storage fsspec knows"),
        (batch("/dev/null/x"), "cannot create or write"),
        ({**batch("/tmp/x"), "storage": {"root": "/tmp/x", "prefix": "a/b"}}, "without /"),
        ({**batch("/tmp/x"), "batch_size": True}, "batch_size"),
        ({**batch("/tmp/x"), "encoding": {"format": "jsonl", "compression": "zstd"}}, "zstd"),
    ],
)
def test_batch_config_problems_are_one_line_naming_the_key(raw, words):
    with pytest.raises(SettingsError) as exc:
        batch_target({"batch_config": raw})
    message = str(exc.value)
    assert message.startswith("batch_config")
    assert words in message
    assert "\n" not in message


def test_retired_batch_settings_point_at_batch_config():
    for old in ({"batch_messages": True}, {"batch_dir": "/tmp/b"}):
        with pytest.raises(SettingsError, match=r"replaced by the Singer SDK's batch_config"):
            Settings.from_config({**BASE, **old})
    # left at their old defaults (an old meltano.yml), they are ignored
    Settings.from_config({**BASE, "batch_messages": False, "batch_max_records": 10000})
