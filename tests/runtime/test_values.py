"""Type-tagged plain values: what goes in comes back as itself, through msgpack."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
import uuid
from decimal import Decimal
from enum import Enum, Flag, IntEnum, StrEnum, auto
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, RootModel

from outlast.values import TAG, StoredValueError, from_plain, rebuild, register_codec, to_plain
from statestore.codec import pack, unpack

# --- user types, at module level so their class paths resolve --------------------------------


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Perm(Flag):
    READ = auto()
    WRITE = auto()


class Shape(Enum):
    SQUARE = (1, 1)
    LINE = (1, 0)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Pair:
    first: Any
    second: Any


@dataclasses.dataclass(frozen=True)
class Derived:
    base: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubled", self.base * 2)


class Box(BaseModel):
    label: str
    when: dt.datetime
    tags: tuple[str, ...] = ()
    kind: Color = Color.RED
    payload: Any = None


class Aliased(BaseModel):
    user_name: str = Field(alias="userName")


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class Names(RootModel[list[str]]):
    pass


class Span(NamedTuple):
    start: int
    end: int


class Money:
    """A user type that is neither a dataclass nor a model: stored through a codec."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (
            other.cents,
            other.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


register_codec(
    Money,
    "test-money",
    lambda m: {"cents": m.cents, "currency": m.currency},
    lambda p: Money(p["cents"], p["currency"]),
)


class Opaque:
    pass


# --- helpers ---------------------------------------------------------------------------------


def roundtrip(value: Any) -> Any:
    return from_plain(unpack(pack(to_plain(value))))


def _tz(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, ZoneInfo):
        return ("zone", tz.key)
    return ("fixed", type(tz), tz.utcoffset(None), tz.tzname(None))


def shape(v: Any) -> Any:
    """``v`` with every type spelled out, comparable with ``==`` (NaN and -0.0 included)."""
    t = type(v)
    if t is float:
        return (t, repr(v))
    if t is Decimal:
        return (t, str(v))
    if t is dict:
        return (t, [(shape(k), shape(x)) for k, x in v.items()])
    if t in (list, tuple) or isinstance(v, tuple):
        return (t, [shape(x) for x in v])
    if t in (set, frozenset):
        return (t, sorted((shape(x) for x in v), key=repr))
    if t in (dt.datetime, dt.time):
        return (t, v.isoformat(), v.fold, _tz(v.tzinfo))
    if isinstance(v, Enum):
        return (t, v.value)
    if dataclasses.is_dataclass(v):
        return (t, [shape(getattr(v, f.name)) for f in dataclasses.fields(v)])
    if isinstance(v, RootModel):
        return (t, shape(v.root))
    if isinstance(v, BaseModel):
        extra = sorted((v.__pydantic_extra__ or {}).items())
        return (t, [shape(getattr(v, n)) for n in type(v).model_fields], shape(extra))
    if t is Money:
        return (t, v.cents, v.currency)
    assert t in (str, int, bool, type(None), bytes, bytearray, dt.date, dt.timedelta, uuid.UUID)
    return (t, v)


# --- strategies ------------------------------------------------------------------------------

_offsets = st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59, seconds=59),
    max_value=dt.timedelta(hours=23, minutes=59, seconds=59),
)
_fixed = st.one_of(
    st.builds(dt.timezone, _offsets),
    st.builds(dt.timezone, _offsets, st.sampled_from(["CET", "X", "UTC"])),
)
_zones = st.timezones()


def scalars(nan: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**64 - 2, max_value=2**64 + 2),
        st.integers(min_value=-(2**63) - 2, max_value=-(2**63) + 2),
        st.builds(lambda n, sign: sign * 3**n, st.integers(41, 400), st.sampled_from([1, -1])),
        st.floats(allow_nan=nan),
        st.text(max_size=8),
        st.binary(max_size=8),
    )


def hashables(nan: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        scalars(nan),
        st.datetimes(),  # naive
        st.datetimes(timezones=st.one_of(_fixed, _zones)),
        st.dates(),
        st.times(timezones=st.one_of(st.none(), _fixed)),
        st.timedeltas(),
        st.uuids(),
        st.decimals(allow_nan=False),  # NaN decimals are unhashable (sNaN) or never equal
        st.sampled_from([*Color, *Level, *Shape, Perm.READ, Perm.READ | Perm.WRITE]),
        st.builds(Point, st.integers(), st.integers()),
        st.builds(Span, st.integers(), st.integers()),
        st.builds(Money, st.integers(), st.sampled_from(["EUR", "USD"])),
        st.builds(Derived, st.integers()),
    )


def values(nan: bool) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        hashables(nan),
        st.binary(max_size=8).map(bytearray),
        st.builds(Box, label=st.text(max_size=4), when=st.datetimes(timezones=_fixed)),
    )
    keys = st.recursive(
        hashables(nan),
        lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
        max_leaves=4,
    )

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(st.text(max_size=6), inner, max_size=4),
            st.dictionaries(keys, inner, max_size=4),
            st.dictionaries(st.sampled_from([TAG, "v", "c"]), inner, max_size=3),
            st.sets(keys, max_size=4),
            st.frozensets(keys, max_size=4),
            st.builds(Pair, inner, inner),
            st.builds(
                Box,
                label=st.text(max_size=4),
                when=st.datetimes(timezones=_zones),
                tags=st.lists(st.text(max_size=3), max_size=3).map(tuple),
                kind=st.sampled_from(Color),
                payload=inner,
            ),
            st.builds(Loose, a=st.integers(), b=inner),
        )

    return st.recursive(leaves, extend, max_leaves=25)


_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties ------------------------------------------------------------------------------


@_settings
@given(values(nan=False))
def test_every_supported_value_comes_back_equal_and_of_the_same_types(value: Any) -> None:
    back = roundtrip(value)
    assert back == value
    assert shape(back) == shape(value)


@_settings
@given(values(nan=True))
def test_values_with_nan_come_back_of_the_same_shape(value: Any) -> None:
    assert shape(roundtrip(value)) == shape(value)


@_settings
@given(values(nan=False))
def test_stored_form_is_plain_msgpack(value: Any) -> None:
    plain = to_plain(value)

    def check(p: Any) -> None:
        if isinstance(p, dict):
            for k, x in p.items():
                assert type(k) is str
                check(x)
        elif isinstance(p, list):
            for x in p:
                check(x)
        else:
            assert type(p) in (type(None), bool, int, float, str, bytes)
            if type(p) is int:
                assert -(2**63) <= p < 2**64

    check(plain)
    assert unpack(pack(plain)) == plain


# --- datetimes -------------------------------------------------------------------------------


def test_offset_datetime_keeps_its_offset() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    back = roundtrip(when)
    assert back == when
    assert back.utcoffset() == dt.timedelta(hours=2)
    assert back.hour == 12


def test_sub_second_and_named_fixed_offsets_survive() -> None:
    odd = dt.timezone(dt.timedelta(microseconds=1))
    named = dt.timezone(dt.timedelta(hours=1), "CET")
    for tz in (odd, named, dt.timezone(-dt.timedelta(seconds=1.5))):
        for value in (dt.datetime(2000, 1, 1, tzinfo=tz), dt.time(10, tzinfo=tz)):
            back = roundtrip(value)
            assert back.utcoffset() == value.utcoffset()
            assert back.tzname() == value.tzname()


def test_naive_datetime_stays_naive() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30)
    back = roundtrip(when)
    assert back == when
    assert back.tzinfo is None


def test_zoneinfo_datetime_keeps_its_zone_and_fold() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 02:30 on 2024-10-27 happens twice in Berlin; fold=1 is the second (+01:00) one.
    second = dt.datetime(2024, 10, 27, 2, 30, tzinfo=berlin, fold=1)
    back = roundtrip(second)
    assert back.tzinfo is berlin
    assert back.fold == 1
    assert back.utcoffset() == dt.timedelta(hours=1)
    # A wall time in the spring gap keeps its wall time too.
    gap = dt.datetime(2024, 3, 31, 2, 30, tzinfo=berlin)
    assert roundtrip(gap).replace(tzinfo=None) == gap.replace(tzinfo=None)


def test_legacy_native_timestamp_passes_through() -> None:
    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert from_plain(unpack(pack({"at": when}))) == {"at": when}


# --- enums, models, dataclasses, tuples ------------------------------------------------------


def test_str_enum_comes_back_as_the_member() -> None:
    back = roundtrip({"color": Color.GREEN, "level": Level.HIGH})
    assert back["color"] is Color.GREEN
    assert back["level"] is Level.HIGH


def test_tuple_set_bytearray_keep_their_types() -> None:
    value = [(1, 2), {3}, frozenset({4}), bytearray(b"ab"), b"cd"]
    back = roundtrip(value)
    assert [type(x) for x in back] == [tuple, set, frozenset, bytearray, bytes]
    assert back == value


def test_dict_with_tuple_and_int_keys_round_trips() -> None:
    value = {("a", 1): "x", 2: "y", Point(1, 2): "z"}
    back = roundtrip(value)
    assert back == value
    assert list(back) == list(value)


def test_model_with_alias_extra_and_root_models() -> None:
    value = [
        Aliased(userName="ann"),
        Loose.model_validate({"a": 1, "extra_field": (1, 2)}),
        Names(["a", "b"]),
    ]
    back = roundtrip(value)
    assert back == value
    assert back[1].extra_field == (1, 2)


def test_model_keeps_nested_model_under_any() -> None:
    inner = Box(label="in", when=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    outer = Box(label="out", when=dt.datetime(2024, 1, 1), payload=inner)
    back = roundtrip(outer)
    assert type(back.payload) is Box
    assert back == outer


def test_dataclass_field_outside_init_round_trips() -> None:
    back = roundtrip(Derived(21))
    assert back == Derived(21)
    assert back.doubled == 42


def test_named_tuple_round_trips() -> None:
    back = roundtrip(Span(1, 5))
    assert type(back) is Span
    assert back.end == 5


def test_decimal_nan_and_huge_ints() -> None:
    for value in (Decimal("NaN"), Decimal("-0"), Decimal("1E+999"), Decimal("sNaN")):
        assert str(roundtrip(value)) == str(value)
    huge = 7**20000  # more digits than str(int) allows by default
    assert roundtrip(huge) == huge
    assert math.isnan(roundtrip(float("nan")))


# --- reserved key, codecs --------------------------------------------------------------------


def test_user_dict_holding_the_reserved_key_round_trips() -> None:
    lookalike = {TAG: "dt", "v": "2024-01-01T00:00:00"}
    back = roundtrip({"nested": lookalike, TAG: [1]})
    assert back == {"nested": lookalike, TAG: [1]}
    assert type(back["nested"]) is dict


def test_registered_codec_round_trips() -> None:
    value = {"price": Money(1299, "EUR"), "list": [Money(1, "USD")]}
    plain = to_plain(value)
    assert plain["price"] == {
        TAG: "codec",
        "n": "test-money",
        "v": {"cents": 1299, "currency": "EUR"},
    }
    assert roundtrip(value) == value


def test_codec_names_are_unique_per_class() -> None:
    class Other:
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_codec(Other, "test-money", lambda o: 0, lambda p: Other())
    with pytest.raises(ValueError, match="built in"):
        register_codec(dt.datetime, "my-datetime", str, dt.datetime.fromisoformat)


def test_unregistered_codec_is_a_clear_error() -> None:
    with pytest.raises(StoredValueError, match="not registered"):
        from_plain({TAG: "codec", "n": "nobody-registered-this", "v": 1})


# --- errors ----------------------------------------------------------------------------------


def test_unknown_type_names_the_type_and_its_path() -> None:
    with pytest.raises(TypeError, match=r"result\['items'\]\[3\] of type .*Opaque"):
        to_plain({"items": [1, 2, 3, Opaque()]}, where="result")
    with pytest.raises(TypeError, match=r"value\.second\[0\] of type .*Opaque"):
        to_plain(Pair(1, [Opaque()]))


def test_subclasses_of_plain_types_are_not_silently_narrowed() -> None:
    class Name(str):
        pass

    with pytest.raises(TypeError, match="Name"):
        to_plain(["x", Name("y")])


def test_self_references_raise_type_error() -> None:
    looped: list[Any] = [1]
    looped.append({"again": looped})
    with pytest.raises(TypeError, match=r"refers to itself .*value\[1\]\['again'\] is a list"):
        to_plain(looped)
    pair = Pair(1, None)
    pair.second = [pair]
    with pytest.raises(TypeError, match="refers to itself"):
        to_plain({"p": pair})


def test_class_that_cannot_be_found_by_name_is_refused_when_stored() -> None:
    class Local(Enum):
        A = 1

    with pytest.raises(TypeError, match="cannot be found again"):
        to_plain(Local.A)


def test_decoding_never_imports_and_checks_the_kind_of_class() -> None:
    missing = "outlast_values_test_never_imported"
    with pytest.raises(StoredValueError, match="not loaded"):
        from_plain({TAG: "enum", "c": f"{missing}:Thing", "v": 1})
    assert missing not in sys.modules
    with pytest.raises(StoredValueError, match="not a loaded dataclass"):
        from_plain({TAG: "dc", "c": "os:system", "v": {"command": "true"}})
    with pytest.raises(StoredValueError, match="unknown type tag"):
        from_plain({TAG: "pickle", "v": b""})
    with pytest.raises(StoredValueError):
        from_plain({TAG: "ba", "v": 10})


# --- rebuild ---------------------------------------------------------------------------------


def unannotated():  # type: ignore[no-untyped-def]  # no annotation is the point
    return None


def returns_box() -> Box:
    raise NotImplementedError


def returns_str() -> str:
    raise NotImplementedError


def returns_boxes() -> list[Box]:
    raise NotImplementedError


def test_rebuild_without_annotation_lets_the_tag_decide() -> None:
    box = Box(label="x", when=dt.datetime(2024, 1, 1))
    assert type(rebuild(unannotated, unpack(pack(to_plain(box))))) is Box


def test_rebuild_keeps_a_str_enum_under_a_str_annotation() -> None:
    assert rebuild(returns_str, unpack(pack(to_plain(Color.RED)))) is Color.RED


def test_rebuild_turns_legacy_dicts_into_the_declared_model() -> None:
    legacy = {"label": "x", "when": "2024-01-01T00:00:00Z", "tags": ["a"], "kind": "green"}
    box = rebuild(returns_box, legacy)
    assert isinstance(box, Box)
    assert box.kind is Color.GREEN
    boxes = rebuild(returns_boxes, [legacy])
    assert [type(b) for b in boxes] == [Box]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values(nan=False))
def test_a_step_sees_live_exactly_what_its_replay_gives(value: Any) -> None:
    """Through the runtime: the value code gets back from a live step equals, type for type,
    what a replay of the committed journal gives it."""
    from outlast import App, Context
    from outlast.testing.replay import replay_context
    from statestore import StateStore
    from statestore.backends.memory import MemoryColdTier, MemoryHotTier

    app = App("typed", store=StateStore(MemoryHotTier(inline_limit=256), MemoryColdTier()))
    seen: list[Any] = []

    @app.durable()
    def flow(ctx: Context) -> None:
        seen.append(ctx.step(lambda: value, name="make"))

    run_id = app.start("flow")
    app.drive(run_id)
    flow.fn(replay_context(app, run_id))
    live, replayed = seen
    assert shape(live) == shape(replayed) == shape(value)
