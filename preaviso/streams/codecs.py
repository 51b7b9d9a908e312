"""Bytes in, contracts out: topics carry raw bytes so a bad record reaches the DLQ intact."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from preaviso.schemas.base import TRUSTED
from preaviso.schemas.events import UpstreamEvent

M = TypeVar("M", bound=BaseModel)

_upstream: TypeAdapter[UpstreamEvent] = TypeAdapter(UpstreamEvent)


class DecodeError(ValueError):
    """A record's bytes are not the contract its topic promises."""


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()


def explain(exc: ValidationError) -> str:
    """One line per fault, naming the field: what publishers need to fix it."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def decode(model: type[M], data: bytes | None, *, trusted: bool = False) -> M:
    """``data`` as ``model``; ``trusted`` for bytes Preaviso wrote from a checked record."""
    if data is None:
        raise DecodeError(f"empty record: expected a JSON {model.__name__}")
    try:
        return model.model_validate_json(data, context=TRUSTED if trusted else None)
    except ValidationError as exc:
        raise DecodeError(f"invalid {model.__name__}: {explain(exc)}") from exc


def decode_upstream(data: bytes | None) -> UpstreamEvent:
    """Any upstream event, chosen by its ``type`` field."""
    if data is None:
        raise DecodeError("empty record: expected a JSON event with a 'type' field")
    try:
        return _upstream.validate_json(data)
    except ValidationError as exc:
        raise DecodeError(f"invalid event: {explain(exc)}") from exc


def decode_expected(model: type[M], data: bytes | None) -> M:
    """An upstream event that must be of one type, with a clear error when it is another."""
    event = decode_upstream(data)
    if not isinstance(event, model):
        raise DecodeError(
            f"expected a {model.__name__} on this topic, got a {type(event).__name__}"
        )
    return event
