"""The Singer SDK's own standard tap tests, run in-process against the fake server."""

from __future__ import annotations

import atexit
import datetime as dt

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_mixpanel_parallel.tap import TapMixpanelParallel
from tap_mixpanel_parallel.testing.fake_server import FakeMixpanel
from tests.helpers import PROJECT_ID, SECRET, USER

# get_tap_test_class needs the config when the class is built, so the server starts at import.
_SERVER = FakeMixpanel(
    start=dt.date(2024, 1, 1),
    days=10,
    events_per_day=20,
    service_account=(USER, SECRET),
    project_id=PROJECT_ID,
).start()
atexit.register(_SERVER.stop)

TestTapMixpanelParallel = get_tap_test_class(
    tap_class=TapMixpanelParallel,
    config={
        "service_account_username": USER,
        "service_account_secret": SECRET,
        "project_id": PROJECT_ID,
        "api_url": _SERVER.url,
        "start_date": "2024-01-01",
        "end_date": "2024-01-10",
        "max_requests_per_second": 100,
        "max_requests_per_hour": 100000,
    },
    suite_config=SuiteConfig(max_records_limit=None),
)
