"""JSON Schema files for every event contract, so publishers in any language can validate.

The pydantic models are the source of truth; the files under the repository's
``schemas/`` folder are generated from them and checked in, and a unit test fails
when they drift. Regenerate with ``python -m preaviso.schemas.jsonschema``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel

from preaviso.schemas.events import (
    CustomerUpserted,
    OwnershipRecorded,
    PolicyChanged,
    ProductDiscontinued,
)
from preaviso.schemas.records import DeadLetter, DeliveryReceipt, Impact, Notice, ParkedNotice

JsonSchemaMode = Literal["validation", "serialization"]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
"""pydantic emits draft 2020-12 keywords (``$defs``, ``const``)."""

SCHEMA_ID_BASE: Final = "https://preaviso.example.com/schemas/"
"""Prefix of every ``$id``; the file name completes it, so ids and files match one to one."""

SUFFIX: Final = ".schema.json"

REGENERATE_COMMAND: Final = "python -m preaviso.schemas.jsonschema"

CONTRACTS: Final[tuple[tuple[type[BaseModel], JsonSchemaMode], ...]] = (
    # Upstream systems publish these: describe what Preaviso accepts.
    (CustomerUpserted, "validation"),
    (OwnershipRecorded, "validation"),
    (ProductDiscontinued, "validation"),
    (PolicyChanged, "validation"),
    # Preaviso writes these: describe what readers of its topics receive.
    (Impact, "serialization"),
    (Notice, "serialization"),
    (DeliveryReceipt, "serialization"),
    (ParkedNotice, "serialization"),
    (DeadLetter, "serialization"),
)


def schema_filename(model: type[BaseModel]) -> str:
    """File name of a contract's schema, e.g. ``ProductDiscontinued.schema.json``."""
    return f"{model.__name__}{SUFFIX}"


def build_schema(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    """The model's JSON Schema plus dialect, ``$id`` and a required ``type``.

    Every model defaults ``type`` to its own name, so pydantic lists it as optional;
    on a topic it is the discriminator that selects the contract, so a publisher
    must always send it.
    """
    schema = model.model_json_schema(mode=mode)
    schema["$schema"] = DIALECT
    schema["$id"] = SCHEMA_ID_BASE + schema_filename(model)
    schema["title"] = model.__name__
    required: list[str] = list(schema.get("required", []))
    if "type" in schema.get("properties", {}) and "type" not in required:
        required.insert(0, "type")
    schema["required"] = required
    return schema


def render_schemas() -> dict[str, str]:
    """Every contract's schema as file text: pretty, key-sorted, newline-terminated."""
    return {
        schema_filename(model): json.dumps(
            build_schema(model, mode), indent=2, sort_keys=True, ensure_ascii=False
        )
        + "\n"
        for model, mode in CONTRACTS
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` and drop schema files no contract produces.

    Unchanged files are left untouched so their timestamps do not churn.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    written: list[Path] = []
    for name, text in rendered.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name not in rendered:
            path.unlink()
    return written


def find_drift(directory: Path) -> dict[str, list[str]]:
    """File names that are stale, missing or extra in ``directory``, compared to the models."""
    rendered = render_schemas()
    on_disk = {path.name: path for path in directory.glob(f"*{SUFFIX}") if path.is_file()}
    return {
        "stale": sorted(
            name
            for name, text in rendered.items()
            if name in on_disk and on_disk[name].read_text(encoding="utf-8") != text
        ),
        "missing": sorted(name for name in rendered if name not in on_disk),
        "extra": sorted(name for name in on_disk if name not in rendered),
    }


def default_directory() -> Path:
    """The repository's top-level ``schemas/`` folder, or ``./schemas`` outside a checkout."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "schemas"
    return Path.cwd() / "schemas"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the schema files, or with ``--check`` only report drift (exit 1) for CI."""
    parser = argparse.ArgumentParser(
        prog="python -m preaviso.schemas.jsonschema",
        description="Generate the JSON Schema file of every Preaviso event contract.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any file is stale, missing or extra",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=None,
        help="target folder (default: the repository's schemas/)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.directory if args.directory is not None else default_directory()

    if not args.check:
        paths = write_schemas(directory)
        print(f"wrote {len(paths)} schema files to {directory}")
        return 0

    drift = find_drift(directory)
    if not any(drift.values()):
        print(f"{len(CONTRACTS)} schema files in {directory} are up to date")
        return 0
    print(f"JSON Schema files in {directory} do not match the models:", file=sys.stderr)
    for problem, names in drift.items():
        for name in names:
            print(f"  {problem}: {name}", file=sys.stderr)
    fix = REGENERATE_COMMAND if args.directory is None else f"{REGENERATE_COMMAND} {directory}"
    print(f"Regenerate them with: {fix}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
