"""Event validation on its own (no database, no server): every field's type and bound,
the reasons naming the field (and the position in a batch), the two validation paths
agreeing, and the bookkeeping of rejected positions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
from pydantic import AfterValidator, TypeAdapter, ValidationError

from gql_usage.ingest import ingestor as ingestor_module
from gql_usage.ingest.decode import decode_batch
from gql_usage.ingest.ingestor import Ingestor
from gql_usage.ingest.results import MAX_LISTED_REJECTIONS, IngestResult, Rejection
from gql_usage.ingest.validate import (
    MAX_CREDITS,
    ValidEvents,
    describe_validation_error,
    parse_event,
    validate_array,
)

EVENT: dict[str, Any] = {
    "id": "evt-1", "accountId": "acme", "apiKeyId": "key-1", "userId": "u-1",
    "endpoint": "/v1/charges", "source": "web", "credits": 3,
    "occurredAt": "2026-01-31T12:00:00Z"}
SURROGATE = "is not valid Unicode text (it holds a lone surrogate \\ud800-\\udfff)"
NUL = "must not contain NUL (\\u0000) characters"
OFFSET = "must carry a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z"
NOT_A_STRING_TIME = "must be an RFC 3339 string with offset, e.g. 2026-01-31T12:00:00Z"
BEFORE_1970 = "Input should be greater than or equal to 1970-01-01T00:00:00Z"


def _with(**changes: Any) -> dict[str, Any]:
    """``EVENT`` with fields replaced; ``...`` removes one."""
    event = dict(EVENT)
    for name, value in changes.items():
        if value is ...:
            del event[name]
        else:
            event[name] = value
    return event


def _reason(raw: Any) -> str:
    with pytest.raises(ValueError) as info:
        parse_event(raw)
    return str(info.value)


# --- accepted --------------------------------------------------------------------------


def test_a_valid_event_is_typed_and_unknown_keys_are_dropped():
    event = parse_event(_with(extra={"ignored": True}, occurredAt="2026-01-31T13:00:00+01:00"))
    assert dict(event) == {
        "id": "evt-1", "accountId": "acme", "apiKeyId": "key-1", "userId": "u-1",
        "endpoint": "/v1/charges", "source": "web", "credits": 3,
        "occurredAt": datetime(2026, 1, 31, 12, 0, tzinfo=UTC)}
    assert event["occurredAt"].utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("changes", [
    {"userId": None}, {"userId": ...}, {"credits": 0}, {"credits": MAX_CREDITS},
    {"id": "x" * 128}, {"accountId": "a" * 128}, {"apiKeyId": "k" * 128},
    {"userId": "u" * 128}, {"endpoint": "/" * 512}, {"source": "s" * 128},
    {"id": " padded "}, {"id": "é✓"}, {"occurredAt": "1970-01-01T00:00:00Z"},
    {"occurredAt": "1970-01-01T05:30:00+05:30"}, {"occurredAt": "2026-01-31t12:00:00z"},
])
def test_values_at_the_bounds_are_accepted(changes):
    event = parse_event(_with(**changes))
    for name, value in changes.items():
        if name == "occurredAt":
            assert event["occurredAt"] >= datetime(1970, 1, 1, tzinfo=UTC)
        elif value is ...:
            assert name not in event
        else:
            assert event[name] == value


def test_max_credits_is_a_trillion():
    assert MAX_CREDITS == 1_000_000_000_000


# --- refused, with the field named -----------------------------------------------------


@pytest.mark.parametrize(("changes", "reason"), [
    # credits: a JSON integer 0..10^12, nothing else
    ({"credits": -1}, "credits: Input should be greater than or equal to 0"),
    ({"credits": 10**12 + 1}, "credits: Input should be less than or equal to 1000000000000"),
    ({"credits": "5"}, "credits: Input should be a valid integer"),
    ({"credits": 1.5}, "credits: Input should be a valid integer"),
    ({"credits": 2.0}, "credits: Input should be a valid integer"),
    ({"credits": True}, "credits: Input should be a valid integer"),
    ({"credits": None}, "credits: Input should be a valid integer"),
    ({"credits": ...}, "credits: is required"),
    # ids: strings, 1..128 characters, not blank
    ({"id": ""}, "id: String should have at least 1 character"),
    ({"id": " \t\n"}, "id: must not be blank"),
    ({"id": "x" * 129}, "id: String should have at most 128 characters"),
    ({"id": 7}, "id: Input should be a valid string"),
    ({"id": ...}, "id: is required"),
    ({"accountId": "  "}, "accountId: must not be blank"),
    ({"accountId": None}, "accountId: Input should be a valid string"),
    ({"apiKeyId": "k" * 129}, "apiKeyId: String should have at most 128 characters"),
    ({"apiKeyId": ["k"]}, "apiKeyId: Input should be a valid string"),
    ({"userId": ""}, "userId: String should have at least 1 character"),
    ({"userId": " "}, "userId: must not be blank"),
    ({"userId": 5}, "userId: Input should be a valid string"),
    ({"endpoint": "/" * 513}, "endpoint: String should have at most 512 characters"),
    ({"endpoint": " "}, "endpoint: must not be blank"),
    ({"source": "s" * 129}, "source: String should have at most 128 characters"),
    ({"source": ...}, "source: is required"),
    # occurredAt: an RFC 3339 string with a zone, not before 1970
    ({"occurredAt": "2026-01-31T12:00:00"}, f"occurredAt: {OFFSET}"),
    ({"occurredAt": 1769860800}, f"occurredAt: {NOT_A_STRING_TIME}"),
    ({"occurredAt": "1969-12-31T23:59:59Z"}, f"occurredAt: {BEFORE_1970}"),
    ({"occurredAt": "1970-01-01T00:30:00+01:00"}, f"occurredAt: {BEFORE_1970}"),
    ({"occurredAt": "yesterday"}, "occurredAt: Input should be a valid datetime, input is too "
                                  "short"),
    ({"occurredAt": ...}, "occurredAt: is required"),
])
def test_each_field_type_and_bound_is_named(changes, reason):
    assert _reason(_with(**changes)) == reason


def test_every_missing_field_is_named_in_field_order():
    assert _reason({}) == (
        "id: is required; accountId: is required; apiKeyId: is required; endpoint: is "
        "required; source: is required; credits: is required; occurredAt: is required")


@pytest.mark.parametrize(("raw", "kind"), [([], "list"), (3, "int"), ("e", "str"),
                                           (None, "NoneType"), (True, "bool")])
def test_an_event_that_is_not_an_object(raw, kind):
    assert _reason(raw) == f"event must be a JSON object, got {kind}"


@pytest.mark.parametrize("field", ["id", "accountId", "apiKeyId", "userId", "endpoint",
                                   "source"])
def test_nul_is_refused_in_every_text_field(field):
    assert _reason(_with(**{field: "a\x00b"})) == f"{field}: {NUL}"


def test_every_field_with_nul_is_named():
    assert _reason(_with(id="\x00", source="web\x00")) == f"id: {NUL}; source: {NUL}"


@pytest.mark.parametrize("field", ["id", "accountId", "apiKeyId", "userId", "endpoint",
                                   "source", "occurredAt"])
def test_a_lone_surrogate_is_named_in_every_field(field):
    assert _reason(_with(**{field: "x\ud800"})) == f"{field}: {SURROGATE}"


def test_a_lone_surrogate_inside_an_ignored_or_nested_value():
    # In a known field, even nested in a list: named. In an unknown key: ignored.
    assert _reason(_with(apiKeyId=["\udfff"])) == f"apiKeyId: {SURROGATE}"
    assert parse_event(_with(unknown="\ud800"))["id"] == "evt-1"


# --- the one-pass path agrees with the per-event path --------------------------------


BAD = [_with(credits=-1), _with(credits=10**12 + 1), _with(credits="1"), _with(credits=1.0),
       _with(id=""), _with(id=" "), _with(id="i" * 129), _with(userId=""),
       _with(endpoint="e" * 513), _with(source=3), _with(occurredAt="2026-01-31T12:00:00"),
       _with(occurredAt=0), _with(occurredAt="1969-12-31T23:59:59Z"), _with(accountId=...)]


@pytest.mark.parametrize("bad", BAD)
def test_both_paths_refuse_the_same_event_for_the_same_reason(bad):
    with pytest.raises(ValidationError) as info:
        validate_array(json.dumps([EVENT, bad]).encode())
    assert describe_validation_error(info.value) == "1." + _reason(bad)


def test_both_paths_accept_the_same_events_with_the_same_values():
    good = [EVENT, _with(userId=None, credits=0), _with(userId=..., credits=MAX_CREDITS,
                                                        occurredAt="2030-06-01T00:00:00-07:00")]
    batch = validate_array(json.dumps(good).encode())
    assert isinstance(batch, ValidEvents)
    assert list(batch) == [parse_event(e) for e in good]
    assert batch[2]["occurredAt"] == datetime(2030, 6, 1, 7, 0, tzinfo=UTC)


# --- describe_validation_error ---------------------------------------------------------


def test_batch_errors_name_the_position_and_the_field():
    batch = [EVENT, _with(credits=-1), _with(id=...)]
    with pytest.raises(ValidationError) as info:
        validate_array(json.dumps(batch).encode())
    assert describe_validation_error(info.value) == (
        "1.credits: Input should be greater than or equal to 0; 2.id: is required")


def test_at_most_ten_errors_are_described_and_the_rest_counted():
    with pytest.raises(ValidationError) as info:
        validate_array(b"[{}, {}]")  # 7 missing fields each: 14 errors
    assert describe_validation_error(info.value) == (
        "0.id: is required; 0.accountId: is required; 0.apiKeyId: is required; "
        "0.endpoint: is required; 0.source: is required; 0.credits: is required; "
        "0.occurredAt: is required; 1.id: is required; 1.accountId: is required; "
        "1.apiKeyId: is required; and 4 more")


def test_an_error_of_the_whole_value_is_named_event():
    with pytest.raises(ValidationError) as info:
        validate_array(b'{"id": "e"}')
    assert describe_validation_error(info.value) == "event: Input should be a valid array"


def test_a_field_name_from_the_client_is_quoted_within_bounds():
    with pytest.raises(ValidationError) as info:
        TypeAdapter(dict[str, int]).validate_python({"ok": "a", "bad key!": "b", "k" * 70: "c"})
    assert describe_validation_error(info.value) == (
        "ok: Input should be a valid integer, unable to parse string as an integer; "
        "'bad key!': Input should be a valid integer, unable to parse string as an integer; "
        "'" + "k" * 64 + "'… (70 characters): Input should be a valid integer, unable to "
        "parse string as an integer")


def _refuse(value: str) -> str:
    raise ValueError("x" * 1000)


def test_a_long_reason_is_cut_and_the_value_error_prefix_dropped():
    with pytest.raises(ValidationError) as info:
        TypeAdapter(Annotated[str, AfterValidator(_refuse)]).validate_python("v")
    # 400 characters at most: 371 of the reason and "… (cut from 1,000 characters)".
    described = describe_validation_error(info.value)
    assert described == "event: " + "x" * 371 + "… (cut from 1,000 characters)"


# --- rejection bookkeeping ---------------------------------------------------------------


def test_the_answer_lists_rejections_by_position_whatever_the_order_found():
    result = IngestResult(accepted=2, duplicates=1, rejected=[
        Rejection(7, "seven"), Rejection(0, "zero"), Rejection(3, "three")])
    assert result.as_json() == {
        "accepted": 2, "duplicates": 1,
        "rejected": [{"index": 0, "reason": "zero"}, {"index": 3, "reason": "three"},
                     {"index": 7, "reason": "seven"}],
        "rejectedCount": 3, "rejectedIndexes": [0, 3, 7]}


def test_without_rejections_the_answer_has_no_count_or_indexes():
    assert IngestResult(accepted=5).as_json() == {"accepted": 5, "duplicates": 0,
                                                  "rejected": []}


def test_reasons_are_capped_but_every_position_is_listed():
    assert MAX_LISTED_REJECTIONS == 100
    result = IngestResult(rejected=[Rejection(i, f"r{i}") for i in range(249, -1, -1)])
    answer = result.as_json()
    assert answer["rejected"] == [{"index": i, "reason": f"r{i}"} for i in range(100)]
    assert answer["rejectedCount"] == 250
    assert answer["rejectedIndexes"] == list(range(250))


NOW_US = 1_800_000_000 * 1_000_000  # 2027-01-15T08:00:00Z


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingestor_module, "now_us", lambda: NOW_US)


async def test_every_rejected_item_keeps_its_position_in_the_batch(fixed_clock):
    # No event reaches the database: each is rejected while decoding or validating;
    # the times are 1 µs outside the window (300 s ahead, 3,600 s back).
    now = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    ahead = (now + timedelta(seconds=300, microseconds=1)).isoformat()
    back = (now - timedelta(seconds=3600, microseconds=1)).isoformat()
    lines = [
        json.dumps(_with(credits=-1)),    # index 0, line 1
        "",
        "{not json",                      # index 1, line 3
        "   ",
        json.dumps([1]),                  # index 2, line 5
        json.dumps(_with(occurredAt=ahead)),
        json.dumps(_with(occurredAt=back)),
        json.dumps(_with(id="\x00")),     # index 5, line 8
    ]
    items = decode_batch("\n".join(lines).encode(), "application/x-ndjson", 100)
    result = await Ingestor(max_future_seconds=300, max_age_seconds=3600).ingest(items)
    assert result.as_json() == {
        "accepted": 0, "duplicates": 0,
        "rejected": [
            {"index": 0, "reason": "credits: Input should be greater than or equal to 0"},
            {"index": 1, "reason": "line 3 is not valid JSON: Expecting property name "
                                   "enclosed in double quotes"},
            {"index": 2, "reason": "event must be a JSON object, got list"},
            {"index": 3, "reason": "occurredAt: 2027-01-15T08:05:00.000001+00:00 is more than "
                                   "300 seconds in the future"},
            {"index": 4, "reason": "occurredAt: older than the configured maximum age of "
                                   "3600 seconds"},
            {"index": 5, "reason": f"id: {NUL}"},
        ],
        "rejectedCount": 6, "rejectedIndexes": [0, 1, 2, 3, 4, 5]}


async def test_the_time_window_is_checked_on_the_one_pass_path_too(fixed_clock):
    plus_one = timezone(timedelta(hours=1))
    late = datetime(2027, 1, 15, 9, 0, 0, 1, tzinfo=plus_one)  # 1 µs past now + 0 s
    items = decode_batch(json.dumps([_with(occurredAt=late.isoformat())] * 2).encode(),
                         "application/json", 100)
    assert isinstance(items, ValidEvents)
    result = await Ingestor(max_future_seconds=0).ingest(items)
    reason = ("occurredAt: 2027-01-15T09:00:00.000001+01:00 is more than 0 seconds in the "
              "future")
    assert result.rejected == [Rejection(0, reason), Rejection(1, reason)]
    assert (result.accepted, result.duplicates) == (0, 0)
