"""`preaviso publish` reads JSON Lines, an object or an array, and refuses all on any error."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from preaviso import publish as publish_module
from preaviso.cli import app
from preaviso.devtools import dataset
from preaviso.publish import (
    MAX_REPORTED,
    Events,
    InputChangedError,
    Record,
    check,
    parse_events,
    records,
    route,
)
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.codecs import encode
from preaviso.synth import SynthSpec, write

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


def test_a_bidirectional_control_in_a_name_is_refused_where_it_is_published() -> None:
    doc = json.loads(PEOPLE[0].model_dump_json())
    doc["name"] = "Ana \u202egpj.exe"
    _, errors = parse_events(json.dumps(doc))
    assert "CustomerUpserted.name" in str(errors[0])
    assert "bidirectional controls" in str(errors[0])


def test_each_event_goes_to_its_topic_with_the_documented_key() -> None:
    change = dataset.warranty_change()
    assert route(PEOPLE[0]) == (t.CUSTOMERS, PEOPLE[0].customer_id.encode())
    assert route(OWNED[0]) == (t.OWNERSHIPS, OWNED[0].customer_id.encode())
    assert route(change) == (t.CHANGES, change.policy_id.encode())
    disc = dataset.dishwasher_discontinued()
    assert route(disc) == (t.CHANGES, disc.event_id.encode())


# Streaming: files of any size, checked whole before anything is sent.


class Sent:
    """Stands in for the Kafka send: records what would have been published."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.calls = 0

    async def __call__(
        self, settings: Settings, records: Iterable[Record], on_sent: Any = None
    ) -> Counter[str]:
        self.calls += 1
        self.records.extend(records)
        return Counter(settings.topic(spec.name) for spec, _, _ in self.records)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    fake = Sent()
    monkeypatch.setattr(publish_module, "send", fake)
    monkeypatch.setenv("PREAVISO_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    return fake


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic directory of about 40,000 lines."""
    path = tmp_path_factory.mktemp("publish") / "directory.jsonl"
    with path.open("wb") as f:
        write(SynthSpec(10_000), f)
    return path


def with_lines_replaced(source: Path, target: Path, bad: dict[int, str]) -> Path:
    with source.open() as src, target.open("w") as out:
        for number, line in enumerate(src, 1):
            out.write(bad[number] + "\n" if number in bad else line)
    return target


def test_a_bad_line_in_the_middle_of_a_big_file_publishes_nothing(
    big_file: Path, tmp_path: Path, sent: Sent
) -> None:
    broken = with_lines_replaced(big_file, tmp_path / "broken.jsonl", {20_000: '{"type": "Oops"'})

    result = CliRunner().invoke(app, ["publish", str(broken)])

    assert result.exit_code == 2
    assert result.stderr.startswith(f"{broken}: line 20000: not valid JSON (")
    assert "nothing published: 1 invalid event(s)" in result.stderr
    assert sent.calls == 0


def test_only_the_first_hundred_errors_are_shown_and_all_are_counted(
    big_file: Path, tmp_path: Path, sent: Sent
) -> None:
    bad = {n: '{"type": "CustomerUpserted"}' for n in range(1000, 1150)}
    broken = with_lines_replaced(big_file, tmp_path / "broken.jsonl", bad)

    result = CliRunner().invoke(app, ["publish", str(broken)])

    lines = result.stderr.splitlines()
    assert result.exit_code == 2
    assert len([line for line in lines if ": line " in line]) == MAX_REPORTED
    assert lines[0].startswith(f"{broken}: line 1000: CustomerUpserted.customer_id:")
    assert "… and 50 more not shown" in result.stderr
    assert "nothing published: 150 invalid event(s)" in result.stderr
    assert sent.calls == 0


def test_a_valid_big_file_is_sent_line_for_line_in_order(big_file: Path, sent: Sent) -> None:
    result = CliRunner().invoke(app, ["publish", str(big_file)])

    assert result.exit_code == 0, result.stderr
    lines = big_file.read_bytes().splitlines()
    assert [value for _, _, value in sent.records] == lines
    assert f"published {len(lines)} event(s)" in result.stdout
    assert "events/s" in result.stderr


def test_standard_input_is_spooled_then_removed(
    sent: Sent, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    text = lines(PEOPLE[0].model_dump_json(), OWNED[0].model_dump_json())

    result = CliRunner().invoke(app, ["publish", "-"], input=text)

    assert result.exit_code == 0, result.stderr
    assert [v for _, _, v in sent.records] == [encode(PEOPLE[0]), encode(OWNED[0])]
    assert list(tmp_path.iterdir()) == []


def test_lines_not_in_canonical_form_are_sent_re_encoded(tmp_path: Path) -> None:
    doc = json.loads(PEOPLE[0].model_dump_json())
    loose = {**doc, "name": "  Ana García  "}
    del loose["schema_version"]
    path = tmp_path / "events.jsonl"
    path.write_text(lines(json.dumps(loose, indent=None), OWNED[0].model_dump_json()))

    events = Events.from_path(path)
    checked = check(events)
    sent_records = list(records(events, checked))

    assert (checked.is_canonical(0), checked.is_canonical(1)) == (False, True)
    expected = PEOPLE[0].model_copy(update={"name": "Ana García"})
    assert sent_records == [
        (t.CUSTOMERS, b"C0000000", encode(expected)),
        (t.OWNERSHIPS, OWNED[0].customer_id.encode(), OWNED[0].model_dump_json().encode()),
    ]


def test_arrays_and_pretty_objects_in_files_are_sent_too(tmp_path: Path) -> None:
    array = tmp_path / "array.json"
    array.write_text(json.dumps([json.loads(p.model_dump_json()) for p in PEOPLE], indent=2))
    pretty = tmp_path / "one.json"
    change = dataset.dishwasher_discontinued()
    pretty.write_text("\n" + json.dumps(json.loads(change.model_dump_json()), indent=2))

    for path, expected, unit in ((array, PEOPLE, "item"), (pretty, [change], "line")):
        events = Events.from_path(path)
        checked = check(events)
        assert (checked.unit, checked.events, checked.invalid) == (unit, len(expected), 0)
        assert [v for _, _, v in records(events, checked)] == [encode(e) for e in expected]


def test_a_broken_array_is_one_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text('[\n{"type": "CustomerUpserted"},\n{oops}\n]')
    checked = check(Events.from_path(path))
    assert [str(e) for e in checked.errors] == [
        "line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    ]


def test_invalid_utf8_is_reported_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(PEOPLE[0].model_dump_json().encode() + b"\n" + b'{"name": "\xff"}\n')
    checked = check(Events.from_path(path))
    assert checked.invalid == 1
    assert str(checked.errors[0]).startswith("line 2: not valid UTF-8")


def test_a_file_changed_after_the_check_is_not_sent(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(lines(PEOPLE[0].model_dump_json()))
    events = Events.from_path(path)
    checked = check(events)
    path.write_text(lines(PEOPLE[0].model_dump_json(), '{"type": "Oops"}'))

    with pytest.raises(InputChangedError):
        list(records(events, checked))


async def test_sends_are_awaited_in_bounded_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight: list[int] = []

    class Producer:
        def __init__(self, **options: Any) -> None:
            self.pending = 0
            self.sent: list[bytes] = []

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.pending += 1
            in_flight.append(self.pending)
            self.sent.append(value)

            def done() -> None:
                self.pending -= 1
                future.set_result(None)

            asyncio.get_running_loop().call_later(0.001, done)
            return future

    async def no_topics(settings: Settings) -> None:
        pass

    monkeypatch.setattr(publish_module, "AIOKafkaProducer", Producer)
    monkeypatch.setattr(publish_module, "ensure_topics", no_topics)
    monkeypatch.setattr(publish_module, "SEND_WINDOW", 10)
    acked: list[float] = []
    events = [*PEOPLE, *OWNED] * 20

    counts = await publish_module.publish(Settings(), events, on_sent=acked.append)

    assert sum(counts.values()) == sum(acked) == len(events)
    assert max(in_flight) <= 20
