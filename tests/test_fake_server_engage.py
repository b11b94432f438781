"""The fake server's engage answers are Mixpanel's documented ones: the expression grammar of
``where``, ``status: error`` bodies and the ``uncached query`` message (so the tap is tested
against Mixpanel's words, not our own assumptions)."""

from __future__ import annotations

from datetime import date

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tap_mixpanel_parallel.testing.fake_server import Faults
from tap_mixpanel_parallel.testing.fake_server.query import UNCACHED_QUERY
from tap_mixpanel_parallel.testing.fake_server.where import WhereError, compile_where
from tests.helpers import PROJECT_ID, SECRET, USER

START = date(2024, 1, 1)
PROFILE = {"$last_seen": "2024-01-02T00:00:00", "n": 3.0, "s": "abc", "ok": True}


def engage(server, **form):
    return requests.post(
        f"{server.url}/api/query/engage",
        params={"project_id": str(PROJECT_ID)},
        data=form,
        auth=(USER, SECRET),
        timeout=10,
    )


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ('properties["n"] > 2', True),
        ('properties["n"] >= 3 and properties["n"] < 4', True),
        ('properties["n"] == "3"', False),  # == across types is false
        ('properties["n"] != "3"', True),
        ('"b" in properties["s"]', True),
        ('properties["n"] in [1, 2, 3]', True),
        ('not defined(properties["missing"])', True),
        ('defined(properties["s"]) or properties["missing"] > 1', True),
        ('properties["missing"] > 1', False),  # undefined
        ('not (properties["missing"] > 1)', True),  # not undefined is true
        ('number(properties["s"]) > 0', False),  # "abc" is no number: undefined
        ('string(properties["n"]) == "3"', True),
        ('floor(properties["n"] / 2) == 1', True),
        ('properties["s"] + "d" == "abcd"', True),
        ('boolean(properties["ok"]) and -properties["n"] < 0', True),
    ],
)
def test_where_follows_mixpanels_expression_grammar(expression, matches):
    assert compile_where(expression)(PROFILE) is matches


def test_comparing_strings_is_undefined_by_the_grammar_but_works_in_practice():
    where = 'properties["$last_seen"] >= "2024-01-01T00:00:00"'
    assert compile_where(where)(PROFILE)
    assert not compile_where(where, compare_strings=False)(PROFILE)


@pytest.mark.parametrize("bad", ['properties["x" >= 1', "1 +", 'propertie["x"]', '"a" and 1'])
def test_an_expression_outside_the_grammar_is_refused(bad):
    with pytest.raises(WhereError):
        compile_where(bad)({"x": 1.0})


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_number_comparisons_are_pythons(a, b):
    profile = {"a": a, "b": b}
    assert compile_where('properties["a"] >= properties["b"]')(profile) is (a >= b)
    assert compile_where('properties["a"] < properties["b"]')(profile) is (a < b)


def test_the_server_filters_profiles_by_the_grammar_and_refuses_what_is_outside_it(fake_server):
    server = fake_server(start=START, days=2, profiles=40)
    answer = engage(server, where='properties["visits"] < 5')
    assert answer.status_code == 200
    ids = {p["$distinct_id"] for p in answer.json()["results"]}
    assert ids == {f"user-{i:07d}" for i in range(40) if i % 97 < 5}
    assert engage(server, where="visits <").status_code == 400
    strict = fake_server(start=START, days=2, profiles=40, where_strict_grammar=True)
    since = engage(strict, where='properties["$last_seen"] >= "2000-01-01T00:00:00"')
    assert since.json()["results"] == []


def test_an_expired_session_gets_mixpanels_uncached_query_message(fake_server):
    server = fake_server(
        start=START, days=2, profiles=40, faults=Faults(expire_sessions=1, expire_after_pages=0)
    )
    first = engage(server, page_size="10").json()
    later = engage(server, page_size="10", page="1", session_id=first["session_id"])
    assert later.status_code == 400
    assert later.json()["error"] == UNCACHED_QUERY
    assert "session" not in later.json()["error"]
    server.faults.session_gone_status = 200
    again = engage(server, page_size="10", page="1", session_id=first["session_id"])
    assert again.status_code == 200
    assert again.json() == {"error": UNCACHED_QUERY, "status": "error"}


def test_status_error_pages_no_total_short_pages_and_shifting_sessions(fake_server):
    faults = Faults(
        status_error_page=0,
        status_error_times=1,
        status_error_results=True,
        engage_no_total=True,
        short_page=1,
        shifting_sessions=1,
    )
    server = fake_server(start=START, days=2, profiles=40, faults=faults)
    refused = engage(server, page_size="10")
    assert refused.status_code == 200
    assert refused.json() == {
        "error": faults.status_error_message,
        "status": "error",
        "results": [],
    }
    first = engage(server, page_size="10").json()
    assert "total" not in first
    sid = first["session_id"]
    second = engage(server, page_size="10", page="1", session_id=sid).json()
    assert len(second["results"]) == 5  # the short page
    assert second["results"][0] == first["results"][-1]  # the session shifted by one
