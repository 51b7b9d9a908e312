"""`preaviso publish` reads JSON Lines, an object or an array, and refuses all on any error."""

from __future__ import annotations

import json

import pytest

from preaviso.devtools import dataset
from preaviso.publish import parse_events, route
from preaviso.streams import topics as t

PEOPLE, OWNED = dataset.directory(3)


def lines(*docs: str) -> str:
    return "\n".join(docs) + "\n"


def test_json_lines_become_events_in_order() -> None:
    text = lines(PEOPLE[0].model_dump_json(), "", OWNED[0].model_dump_json())
    events, errors = parse_events(text)
    assert errors == []
    assert [e.type for e in events] == ["CustomerUpserted", "OwnershipRecorded"]


def test_a_pretty_printed_object_and_an_array_are_accepted() -> None:
    change = dataset.dishwasher_discontinued()
    one, errors_one = parse_events(json.dumps(json.loads(change.model_dump_json()), indent=2))
    many, errors_many = parse_events(
        json.dumps([json.loads(p.model_dump_json()) for p in PEOPLE], indent=2)
    )
    assert errors_one == errors_many == []
    assert one == [change]
    assert many == PEOPLE


def test_every_bad_line_is_reported_with_its_number_and_field() -> None:
    bad = json.loads(PEOPLE[1].model_dump_json())
    bad["locale"] = "fr"
    text = lines(PEOPLE[0].model_dump_json(), json.dumps(bad), "{broken", '{"type": "Nope"}')

    _, errors = parse_events(text)

    messages = [str(e) for e in errors]
    assert messages[0].startswith("line 2: CustomerUpserted.locale:")
    assert messages[1].startswith("line 3: not valid JSON")
    assert messages[2].startswith("line 4: ")
    assert "Nope" in messages[2] or "tag" in messages[2]
    assert len(errors) == 3


def test_an_array_reports_items() -> None:
    _, errors = parse_events('[{"type": "CustomerUpserted"}]')
    assert str(errors[0]).startswith("item 1: CustomerUpserted.customer_id: Field required")


def test_unknown_fields_are_errors_not_silently_dropped() -> None:
    doc = json.loads(PEOPLE[0].model_dump_json())
    doc["emial"] = "typo@example.com"
    _, errors = parse_events(json.dumps(doc))
    assert "emial" in str(errors[0])


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_input_is_an_error(text: str) -> None:
    _, errors = parse_events(text)
    assert "no events found" in str(errors[0])


def test_a_header_injection_in_a_name_is_refused() -> None:
    doc = json.loads(PEOPLE[0].model_dump_json())
    doc["name"] = "Eve\r\nBcc: victim@example.com"
    _, errors = parse_events(json.dumps(doc))
    assert "CustomerUpserted.name" in str(errors[0])
    assert "control characters" in str(errors[0])


def test_each_event_goes_to_its_topic_with_the_documented_key() -> None:
    change = dataset.warranty_change()
    assert route(PEOPLE[0]) == (t.CUSTOMERS, PEOPLE[0].customer_id.encode())
    assert route(OWNED[0]) == (t.OWNERSHIPS, OWNED[0].customer_id.encode())
    assert route(change) == (t.CHANGES, change.policy_id.encode())
    disc = dataset.dishwasher_discontinued()
    assert route(disc) == (t.CHANGES, disc.event_id.encode())
