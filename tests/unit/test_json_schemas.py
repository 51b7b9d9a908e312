"""The checked-in JSON Schema files describe the pydantic contracts exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from preaviso.schemas.events import UpstreamEvent
from preaviso.schemas.jsonschema import (
    CONTRACTS,
    DIALECT,
    REGENERATE_COMMAND,
    main,
    render_schemas,
    schema_filename,
    write_schemas,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas"

MODELS: dict[str, type[BaseModel]] = {model.__name__: model for model, _ in CONTRACTS}
UPSTREAM = {"CustomerUpserted", "OwnershipRecorded", "ProductDiscontinued", "PolicyChanged"}
ENVELOPE = {
    "event_id": "3f0c6a4e-9b1d-4c1a-8f77-2d0e5b1a9c10",
    "schema_version": 1,
    "occurred_at": "2025-03-01T09:30:00+01:00",
    "source": "erp",
}

# One realistic message per contract, exactly as it would appear on a topic.
NOTICE = {
    **ENVELOPE,
    "type": "Notice",
    "notice_id": "8d7f1e52-4f0a-5b7e-9c1d-0a2b3c4d5e6f",
    "customer_id": "C-1001",
    "cause_event_id": "3f0c6a4e-9b1d-4c1a-8f77-2d0e5b1a9c10",
    "recipient": "ana@example.com",
    "locale": "es",
    "subject": "Su WM-800 deja de fabricarse",
    "message_id": "<8d7f1e52@preaviso.example.com>",
    "mime": "Subject: Su WM-800 deja de fabricarse\r\n\r\nHola Ana\r\n",
}
SAMPLES: dict[str, dict[str, Any]] = {
    "CustomerUpserted": {
        **ENVELOPE,
        "type": "CustomerUpserted",
        "customer_id": "C-1001",
        "email": "ana@example.com",
        "name": "Ana García",
        "locale": "es",
        "region": "ES-MD",
        "segment": "consumer",
        "marketing_consent": False,
    },
    "OwnershipRecorded": {
        **ENVELOPE,
        "type": "OwnershipRecorded",
        "customer_id": "C-1001",
        "sku": "WM-800",
        "product_name": "Lavadora WM-800",
        "purchase_date": "2023-06-15",
    },
    "ProductDiscontinued": {
        **ENVELOPE,
        "type": "ProductDiscontinued",
        "skus": ["WM-800", "WM-800X"],
        "model_name": "WM-800",
        "effective_date": "2025-06-30",
        "last_order_date": "2025-05-31",
        "spare_parts_until": "2030-06-30",
        "replacement_offer": "15% off the WM-900.",
    },
    "PolicyChanged": {
        **ENVELOPE,
        "type": "PolicyChanged",
        "policy_id": "returns-2025",
        "kind": "returns",
        "title": "New returns window",
        "scope": {"all_customers": False, "regions": ["ES-MD", "ES-CT"]},
        "old_terms": "30 days.",
        "new_terms": "14 days.",
        "effective_date": "2025-07-01",
        "required_notice_days": 30,
    },
    "Impact": {
        **ENVELOPE,
        "type": "Impact",
        "notice_id": "8d7f1e52-4f0a-5b7e-9c1d-0a2b3c4d5e6f",
        "kind": "discontinuation",
        "customer_id": "C-1001",
        "cause_event_id": "3f0c6a4e-9b1d-4c1a-8f77-2d0e5b1a9c10",
        "reason": "Owns WM-800 bought on 2023-06-15.",
        "effective_date": "2025-06-30",
        "model_name": "WM-800",
        "products": [
            {"sku": "WM-800", "product_name": "Lavadora WM-800", "purchase_date": "2023-06-15"}
        ],
        "last_order_date": "2025-05-31",
        "spare_parts_until": "2030-06-30",
        "replacement_offer": None,
        "policy_id": None,
        "policy_kind": None,
        "title": None,
        "old_terms": None,
        "new_terms": None,
        "required_notice_days": None,
    },
    "Notice": NOTICE,
    "DeliveryReceipt": {
        **ENVELOPE,
        "type": "DeliveryReceipt",
        "notice_id": "8d7f1e52-4f0a-5b7e-9c1d-0a2b3c4d5e6f",
        "customer_id": "C-1001",
        "message_id": "<8d7f1e52@preaviso.example.com>",
        "recipient": "ana@example.com",
        "status": "sent",
        "smtp_code": 250,
        "smtp_reply": "2.0.0 Ok: queued",
        "sent_at": "2025-03-01T09:31:02+00:00",
    },
    "ParkedNotice": {
        "type": "ParkedNotice",
        "notice": NOTICE,
        "first_attempt_at": "2025-03-01T09:31:00+00:00",
        "attempts": 3,
        "not_before": "2025-03-01T09:31:09+00:00",
        "last_code": 451,
        "last_reply": "4.7.1 Try again later",
    },
    "DeadLetter": {
        "type": "DeadLetter",
        "stage": "impacts",
        "reason": "1 validation error for ProductDiscontinued",
        "topic": "preaviso.events",
        "partition": 2,
        "offset": 41,
        "key": "V00tODAw",
        "value": "e30=",
        "failed_at": "2025-03-01T09:31:00+00:00",
        "error_type": "ValidationError",
    },
}

_upstream_adapter: TypeAdapter[Any] = TypeAdapter(UpstreamEvent)


def accept(name: str, payload: dict[str, Any]) -> BaseModel:
    """Validate the way Preaviso reads the message: upstream events through the union."""
    if name in UPSTREAM:
        event: BaseModel = _upstream_adapter.validate_python(payload)
        return event
    return MODELS[name].model_validate(payload)


def schema_of(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(render_schemas()[f"{name}.schema.json"])
    return parsed


def tampered_copy(directory: Path) -> None:
    """A schema folder with one stale, one missing and one extra file."""
    write_schemas(directory)
    stale = directory / "ProductDiscontinued.schema.json"
    stale.write_text(stale.read_text(encoding="utf-8").replace('"skus"', '"sku"'), encoding="utf-8")
    (directory / "Notice.schema.json").unlink()
    (directory / "Retired.schema.json").write_text("{}\n", encoding="utf-8")


# --- The checked-in files -------------------------------------------------------------


def test_there_is_one_schema_file_per_contract() -> None:
    assert sorted(render_schemas()) == sorted(f"{name}.schema.json" for name in MODELS)
    assert set(SAMPLES) == set(MODELS), "every contract needs a sample in this file"


@pytest.mark.parametrize("filename", sorted(render_schemas()))
def test_checked_in_schema_file_is_up_to_date(filename: str) -> None:
    path = SCHEMA_DIR / filename
    hint = f"schemas/{filename} is out of date with the models; run `{REGENERATE_COMMAND}`"
    assert path.is_file(), hint.replace("is out of date with the models", "is missing")
    assert path.read_text(encoding="utf-8") == render_schemas()[filename], hint


def test_no_checked_in_schema_file_lacks_a_contract() -> None:
    extra = sorted(
        path.name for path in SCHEMA_DIR.glob("*.schema.json") if path.name not in render_schemas()
    )
    assert not extra, f"no contract produces {extra}; run `{REGENERATE_COMMAND}` to remove them"


def test_schema_files_are_pretty_sorted_and_newline_terminated() -> None:
    for text in render_schemas().values():
        parsed = json.loads(text)
        assert text == json.dumps(parsed, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- What each schema says ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_names_its_contract_and_dialect(name: str) -> None:
    schema = schema_of(name)
    assert schema["$schema"] == DIALECT
    assert schema["$id"].endswith("/" + schema_filename(MODELS[name]))
    assert schema["title"] == name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_type_is_required_and_fixed_to_the_contract_name(name: str) -> None:
    schema = schema_of(name)
    assert "type" in schema["required"]
    assert schema["properties"]["type"]["const"] == name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_lists_exactly_the_model_fields(name: str) -> None:
    schema = schema_of(name)
    assert set(schema["properties"]) == set(MODELS[name].model_fields)
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_upstream_schemas_carry_the_envelope(name: str) -> None:
    assert set(ENVELOPE) <= set(schema_of(name)["properties"])


# --- Samples against schema and model -------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_is_accepted_by_the_model(name: str) -> None:
    assert type(accept(name, SAMPLES[name])) is MODELS[name]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_has_every_required_field_and_nothing_unknown(name: str) -> None:
    schema, sample = schema_of(name), SAMPLES[name]
    assert set(schema["required"]) <= set(sample), "sample lacks a required field"
    assert set(sample) <= set(schema["properties"]), "sample has a field the schema forbids"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_required_fields_alone_are_enough_for_the_model(name: str) -> None:
    required = schema_of(name)["required"]
    minimal = {field: SAMPLES[name][field] for field in required}
    assert type(accept(name, minimal)) is MODELS[name]


@pytest.mark.parametrize(
    ("name", "field"),
    [
        (name, field)
        for name in sorted(MODELS)
        for field in schema_of(name)["required"]
        if field != "type" or name in UPSTREAM
    ],
)
def test_model_rejects_a_message_without_a_required_field(name: str, field: str) -> None:
    payload = {key: value for key, value in SAMPLES[name].items() if key != field}
    with pytest.raises(ValidationError):
        accept(name, payload)


def test_every_sample_validates_against_its_schema_file() -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema library not installed; the shape tests above cover it"
    )
    for name, sample in SAMPLES.items():
        schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(sample)


# --- The regenerate / --check command -------------------------------------------------


def test_check_passes_on_a_fresh_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_schemas(tmp_path)
    assert main(["--check", str(tmp_path)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_on_a_tampered_copy_and_says_how_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered_copy(tmp_path)
    assert main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: ProductDiscontinued.schema.json" in err
    assert "missing: Notice.schema.json" in err
    assert "extra: Retired.schema.json" in err
    assert REGENERATE_COMMAND in err


def test_check_writes_nothing(tmp_path: Path) -> None:
    tampered_copy(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    main(["--check", str(tmp_path)])
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_regenerating_repairs_a_tampered_copy_and_keeps_other_files(tmp_path: Path) -> None:
    tampered_copy(tmp_path)
    (tmp_path / "README.md").write_text("for publishers\n", encoding="utf-8")
    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    assert not (tmp_path / "Retired.schema.json").exists()
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "for publishers\n"


def test_module_runs_with_python_dash_m(tmp_path: Path) -> None:
    tampered_copy(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "preaviso.schemas.jsonschema", "--check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert REGENERATE_COMMAND in result.stderr
