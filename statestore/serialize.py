"""Run records, journal entries and signals as framed msgpack documents, for the hot tier."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from statestore import codec
from statestore.codec import Location
from statestore.errors import SchemaVersionError
from statestore.models import SCHEMA_MAJOR, JournalEntry, RunRecord, Signal

M = TypeVar("M", bound=BaseModel)


def dump(model: BaseModel) -> bytes:
    return codec.encode(model.model_dump(exclude_defaults=True, by_alias=True))


def load(cls: type[M], data: bytes, where: Location) -> M:
    raw = codec.decode(data, where)
    if isinstance(raw, dict):
        _check_schema(cls, raw.get("schema"), where)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise where.corrupt(f"not a valid {cls.__name__}: {exc.errors()[0]['msg']}") from exc


def load_record(data: bytes, *, tier: str, key: str, run_id: str | None = None) -> RunRecord:
    return load(RunRecord, data, Location(run_id=run_id, tier=tier, key=key))


def load_entry(data: bytes, *, tier: str, key: str, run_id: str, seq: int) -> JournalEntry:
    entry = load(JournalEntry, data, Location(run_id=run_id, seq=seq, tier=tier, key=key))
    if entry.seq != seq:
        raise Location(run_id=run_id, seq=seq, tier=tier, key=key).corrupt(
            f"entry stored at seq {seq} says seq {entry.seq}"
        )
    return entry


def load_signal(data: bytes, *, tier: str, key: str, run_id: str) -> Signal:
    return load(Signal, data, Location(run_id=run_id, tier=tier, key=key))


def _check_schema(cls: type[BaseModel], schema: object, where: Location) -> None:
    if schema is None:
        return  # written before records carried a version: 1.0
    major, _, _ = str(schema).partition(".")
    if not major.isdigit():
        raise where.corrupt(f"not a valid {cls.__name__}: schema version {schema!r}")
    if int(major) > SCHEMA_MAJOR:
        raise SchemaVersionError(
            f"{cls.__name__} at {where.describe()} was written with schema {schema}, a newer "
            f"major version than this Outlast reads ({SCHEMA_MAJOR}.x); upgrade this process"
        )
