"""``decode_batch`` on its own (no database, no server): the body layouts, the caps that
are decided while counting (before a full parse), and the errors naming what is wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gql_usage.ingest.decode import (
    MAX_VALUES_PER_EVENT,
    BatchTooLarge,
    BodyError,
    Undecodable,
    decode_batch,
)
from gql_usage.ingest.validate import ValidEvents, parse_event

JSON = "application/json"
NDJSON = "application/x-ndjson"
CAP = 10_000
TOO_LARGE_3 = ("batch holds more than 3 events, the maximum (GQL_USAGE_MAX_BATCH_EVENTS); "
               "send smaller batches")

E1 = {"id": "e1", "accountId": "acme", "apiKeyId": "k1", "userId": "u1",
      "endpoint": "/v1/charges", "source": "web", "credits": 3,
      "occurredAt": "2026-01-31T12:00:00Z"}
E2 = {"id": "e2", "accountId": "acme", "apiKeyId": "k2", "endpoint": "/v1/refunds",
      "source": "zapier", "credits": 0, "occurredAt": "2026-01-31T13:30:00+01:00"}


def _decode(body: bytes, content_type: str = JSON, cap: int = CAP) -> list[Any]:
    return decode_batch(body, content_type, cap)


def _refusal(body: bytes, content_type: str = JSON, cap: int = CAP) -> BatchTooLarge:
    with pytest.raises(BatchTooLarge) as info:
        decode_batch(body, content_type, cap)
    return info.value


def _body_error(body: bytes, content_type: str = JSON, cap: int = CAP) -> str:
    with pytest.raises(BodyError) as info:
        decode_batch(body, content_type, cap)
    return str(info.value)


# --- layouts ------------------------------------------------------------------------


def test_a_valid_json_array_is_validated_in_one_pass():
    items = _decode(json.dumps([E1, E2]).encode())
    assert isinstance(items, ValidEvents)
    assert [e["id"] for e in items] == ["e1", "e2"]
    assert items[0]["occurredAt"] == datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert items[1]["occurredAt"] == datetime(2026, 1, 31, 12, 30, tzinfo=UTC)
    assert items[1]["credits"] == 0 and "userId" not in items[1]


def test_an_array_with_a_bad_event_comes_back_decoded_for_the_per_event_path():
    bad = dict(E2, credits=-1)
    items = _decode(json.dumps([E1, bad]).encode())
    assert not isinstance(items, ValidEvents)
    assert items == [E1, bad]


def test_a_single_object_is_a_batch_of_one():
    assert _decode(json.dumps(E1).encode()) == [E1]


@pytest.mark.parametrize("body", [b"[]", b"[ ]", b" [ ] ", b"\n[\r\n]\t"])
def test_an_empty_array_is_an_empty_batch(body):
    assert _decode(body) == []


def test_array_ndjson_and_single_object_apply_the_same_rules():
    array = _decode(json.dumps([E1, E2]).encode())
    lines = _decode(f"{json.dumps(E1)}\n{json.dumps(E2)}\n".encode(), NDJSON)
    single = _decode(json.dumps(E2).encode())
    assert [parse_event(x) for x in lines] == list(array)
    assert [parse_event(x) for x in single] == list(array)[1:]


@pytest.mark.parametrize("content_type", [
    "application/x-ndjson", "application/ndjson", "application/x-ndjson; charset=utf-8",
    "application/jsonl", "application/x-jsonlines"])
def test_ndjson_content_types(content_type):
    assert _decode(b'{"a": 1}\n{"b": 2}', content_type) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("content_type", ["application/json", "", "text/plain"])
def test_other_content_types_read_the_body_as_one_json_value(content_type):
    assert _body_error(b'{"a": 1}\n{"b": 2}', content_type) == (
        "body is not valid JSON: Extra data at line 2 column 1")


def test_ndjson_skips_blank_lines_and_numbers_lines_as_the_producer_sees_them():
    body = b'{"a": 1}\n\n  \t\n{bad\r\n{"b": 2}\r\n\n'
    assert _decode(body, NDJSON) == [
        {"a": 1},
        Undecodable("line 4 is not valid JSON: Expecting property name enclosed in double quotes"),
        {"b": 2},
    ]


def test_ndjson_line_numbers_when_lines_are_counted_against_the_cap():
    # As many newlines as the cap: the lines are found by the counting scan.
    body = b"1\n\n\n\n{x\n2\n\n"
    assert _decode(body, NDJSON, cap=3) == [
        1,
        Undecodable("line 5 is not valid JSON: Expecting property name enclosed in double quotes"),
        2,
    ]


def test_ndjson_lines_too_long_or_too_deep_reject_only_their_event():
    body = b"1\n" + b"9" * 5000 + b"\n" + b"[" * 100_000 + b"\n"
    assert _decode(body, NDJSON) == [
        1,
        Undecodable("line 2 holds a number too long to read"),
        Undecodable("line 3 is nested too deeply"),
    ]


# --- counting before parsing ----------------------------------------------------------


def test_array_length_cap():
    assert _decode(b"[1, 2, 3]", cap=3) == [1, 2, 3]
    refusal = _refusal(b"[1, 2, 3, 4]", cap=3)
    assert str(refusal) == TOO_LARGE_3 and refusal.max_events == 3
    assert str(_refusal(b" [ 1 ,\n2 ,\t3 , 4 ] ", cap=3)) == TOO_LARGE_3


def test_array_length_counts_items_not_commas():
    assert _decode(b'["a,b,c,d"]', cap=3) == ["a,b,c,d"]
    assert _decode(b"[[1, 2, 3, 4, 5]]", cap=3) == [[1, 2, 3, 4, 5]]
    assert _decode(b'[{"a": 1, "b": 2, "c": 3, "d": 4}]', cap=3) == [
        {"a": 1, "b": 2, "c": 3, "d": 4}]


def test_array_cap_is_decided_before_the_malformed_rest_is_parsed():
    # A full parse would fail on "garbage" (BodyError); counting stops at the 4th item.
    assert str(_refusal(b"[1, 2, 3, 4, garbage", cap=3)) == TOO_LARGE_3


def test_ndjson_line_cap_is_decided_before_any_line_is_decoded():
    assert _decode(b"1\n2\n3\n", NDJSON, cap=3) == [1, 2, 3]
    # The 4th line is not even UTF-8: decoding it would be a BodyError.
    assert str(_refusal(b"1\n2\n3\n\xff\n", NDJSON, cap=3)) == TOO_LARGE_3
    assert str(_refusal(b"x\n" * 4, NDJSON, cap=3)) == TOO_LARGE_3


def test_ndjson_blank_lines_do_not_count_against_the_cap():
    assert _decode(b"1\n\n \n2\r\n\t\n3\n\n\n", NDJSON, cap=3) == [1, 2, 3]


def test_value_count_cap():
    # Cap 2: at most 64 values, counted as commas plus opening brackets, strings included.
    assert MAX_VALUES_PER_EVENT == 32
    at_limit = b'[{"pad": "' + b"," * 62 + b'"}]'  # 62 commas + "[" + "{" = 64
    assert _decode(at_limit, cap=2) == [{"pad": "," * 62}]
    over = b'[{"pad": "' + b"," * 63 + b'"}]'  # 65
    refusal = _refusal(over, cap=2)
    assert refusal.max_events == 2
    assert str(refusal) == (
        "body holds 65 JSON values (commas and brackets), more than 32 per event for 2 "
        "events (GQL_USAGE_MAX_BATCH_EVENTS); send smaller batches without extra values")


@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_value_count_cap_comes_before_any_parse(content_type):
    # 100 "{" and no valid JSON at all: refused for its size, not its syntax.
    assert str(_refusal(b"{" * 100 + b"garbage", content_type, cap=2)).startswith(
        "body holds 100 JSON values (commas and brackets), more than 32 per event for 2 ")


# --- what cannot be read ---------------------------------------------------------------


def test_invalid_utf8_is_named_with_its_byte_offset():
    assert _body_error(b'[{"id": "\xff"}]') == "body is not valid UTF-8 (byte 9)"
    # Found by the length count (a comma per allowed event); the offset counts the
    # leading white space.
    assert _body_error(b" [1,2,3,\xff]", cap=3) == "body is not valid UTF-8 (byte 8)"
    assert _body_error(b'{"a": 1}\n\xff\n', NDJSON) == "line 2 is not valid UTF-8 (byte 0)"
    assert _body_error(b'{"a": 1}\n{"b": "\xc3"}\n', NDJSON) == (
        "line 2 is not valid UTF-8 (byte 7)")


def test_a_lone_surrogate_escape_reaches_the_per_event_path_which_names_the_field():
    items = _decode(b'[{"id": "\\ud800"}]')
    assert not isinstance(items, ValidEvents)
    assert items == [{"id": "\ud800"}]
    with pytest.raises(ValueError) as info:
        parse_event(items[0])
    assert str(info.value) == (
        "id: is not valid Unicode text (it holds a lone surrogate \\ud800-\\udfff)")


def test_a_nul_escape_skips_the_one_pass_path_so_the_event_is_named():
    nul = dict(E1, endpoint="/v1/\x00")
    body = json.dumps([E1, nul]).encode()
    assert b"\\u0000" in body
    items = _decode(body)
    assert not isinstance(items, ValidEvents)
    assert items == [E1, nul]
    with pytest.raises(ValueError) as info:
        parse_event(items[1])
    assert str(info.value) == "endpoint: must not contain NUL (\\u0000) characters"


@pytest.mark.parametrize(("body", "message"), [
    (b"[,]", "body is not valid JSON: Expecting value at line 1 column 2"),
    (b'[{"a": 1}\n{"b"', "body is not valid JSON: Expecting ',' delimiter at line 2 column 1"),
    (b"", "body is not valid JSON: Expecting value at line 1 column 1"),
    (b'"hello"', "body must be a JSON array of events (or NDJSON)"),
    (b"42", "body must be a JSON array of events (or NDJSON)"),
    (b"null", "body must be a JSON array of events (or NDJSON)"),
    (b"[" + b"1" * 5000 + b"]", "body holds a number too long to read"),
    (b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply"),
], ids=["syntax", "syntax-line-2", "empty", "string", "number", "null", "long-number",
        "deep"])
def test_a_body_that_cannot_be_read(body, message):
    assert _body_error(body) == message
