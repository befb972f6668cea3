"""Python values as plain, type-tagged msgpack values, and back.

Everything the runtime stores (step results, run inputs, signal payloads, outputs) goes through
:func:`to_plain` and is packed with ``statestore.codec.pack``; what comes back is unpacked and
passed through :func:`from_plain`. The runtime hands live code the same round trip,
``from_plain(unpack(pack(to_plain(v))))``, so live code and a replay see exactly the same value.
No pickle: the stored form is plain msgpack (None, bool, int, float, str, bytes, list, dict)
that any language can read.

JSON-ish values pass through unchanged. Every other supported type becomes a small map with the
reserved key ``"__ol__"`` naming the type, ``"v"`` holding its plain payload and, for user
classes, ``"c"`` holding the class path ``"module:Qualname"``::

    {"__ol__": "dt", "v": "2024-05-01T12:00:00+02:00"}
    {"__ol__": "enum", "c": "shop.models:Status", "v": "paid"}
    {"__ol__": "map", "v": [[{"__ol__": "tuple", "v": ["a", 1]}, "x"]]}   # {("a", 1): "x"}

Tags: ``dt`` datetime (ISO 8601 with its own offset; ``tz`` a zoneinfo key; ``off`` the offset
in microseconds and ``tzname`` when ISO cannot carry them; ``fold`` when 1), ``date``,
``time``, ``td`` timedelta ([days, seconds, microseconds]), ``uuid``, ``dec`` Decimal, ``int``
(integers beyond msgpack's 64 bits, as a hex string), ``tuple``, ``set``, ``fset``,
``ba`` bytearray, ``map`` (a dict whose keys are not all ``str``, or that holds ``"__ol__"``
itself: a list of [key, value] pairs), ``enum``, ``dc`` dataclass, ``model`` pydantic model,
``nt`` named tuple, ``codec`` a type registered with :func:`register_codec` (``"n"`` its name).

Classes named by stored data are looked up only among modules already in ``sys.modules`` and
only through their ``__dict__``: decoding never imports a module and never runs a module's
``__getattr__``, and the class found must be of the kind the tag says (an Enum for ``enum``,
and so on), so stored data cannot make the runtime call arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import sys
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pydantic_core
from pydantic import BaseModel, RootModel, TypeAdapter, ValidationError

__all__ = [
    "TAG",
    "StoredValueError",
    "from_plain",
    "rebuild",
    "register_codec",
    "to_plain",
]

T = TypeVar("T")

TAG = "__ol__"
"""The reserved key marking a tagged map. A user dict holding it is stored as a ``map``."""

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1  # msgpack's integer range; larger ones are tagged ``int``

# Types stored as they are. ``int`` is not here: it needs the range check above.
_PASS: frozenset[type] = frozenset({str, float, bool, type(None), bytes})


class StoredValueError(ValueError):
    """A stored value cannot be turned back into Python: unknown tag, class or codec."""


class _Unsupported(Exception):  # noqa: N818 - internal signal, turned into TypeError at the top
    def __init__(self, bad: Any, reason: str = "") -> None:
        super().__init__(reason)
        self.bad = bad
        self.reason = reason


# --------------------------------------------------------------------------------------------
# to_plain
# --------------------------------------------------------------------------------------------


def to_plain(value: Any, *, where: str = "value") -> Any:
    """``value`` as plain msgpack-able values, with type tags; raise ``TypeError`` if it can't be.

    ``where`` names the value in error messages (``result["items"][3]``).
    """
    t = type(value)
    if t in _PASS:
        return value
    try:
        return _plain(value)
    except _Unsupported as exc:
        path = _find_path(value, exc.bad)
        place = where + path if path is not None else f"something inside {where}"
        why = exc.reason or (
            "it is not a supported type; store plain values, datetimes, enums, dataclasses, "
            "pydantic models and the like, or register a codec with outlast.values.register_codec"
        )
        raise TypeError(f"cannot store {place} of type {_qualname(type(exc.bad))}: {why}") from None
    except RecursionError:
        # Only reached for self-referencing (or absurdly deep) values, so the common case pays
        # nothing for cycle detection; the slow search below explains what went wrong.
        cycle = _find_cycle(value)
        if cycle is None:
            raise TypeError(f"cannot store {where}: it is nested too deeply") from None
        path, kind = cycle
        raise TypeError(
            f"cannot store {where}: it refers to itself ({where}{path} is a {_qualname(kind)} "
            "that contains itself); self-referencing values cannot be stored"
        ) from None


def _plain(v: Any) -> Any:
    t = type(v)
    if t in _PASS:
        return v
    if t is int:
        return v if _INT_MIN <= v <= _INT_MAX else _big_int(v)
    encode = _ENCODERS.get(t)
    if encode is None:
        encode = _encoder_for(v)
    return encode(v)


def _big_int(v: int) -> Any:
    # Hex, not decimal: str(int) refuses more than 4300 digits (sys.set_int_max_str_digits).
    return {TAG: "int", "v": format(v, "x")}


def _dict(d: dict[Any, Any]) -> Any:
    if TAG in d:
        return _pairs(d)
    out = {}
    for k, v in d.items():
        if type(k) is not str:
            return _pairs(d)
        tv = type(v)
        # Inlined scalar check: a flat dict of strings and numbers should cost one loop.
        if tv in _PASS or (tv is int and _INT_MIN <= v <= _INT_MAX):
            out[k] = v
        else:
            out[k] = _plain(v)
    return out


def _pairs(d: dict[Any, Any]) -> Any:
    return {TAG: "map", "v": [[_plain(k), _plain(v)] for k, v in d.items()]}


def _list(items: list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any]) -> list[Any]:
    return [
        x if (tx := type(x)) in _PASS or (tx is int and _INT_MIN <= x <= _INT_MAX) else _plain(x)
        for x in items
    ]


def _tz_fields(value: dt.datetime | dt.time, out: dict[str, Any]) -> dict[str, Any]:
    tz = value.tzinfo
    if isinstance(tz, ZoneInfo) and tz.key is not None:
        out["tz"] = tz.key
    elif tz is not None:
        # Other tzinfo classes (pytz, dateutil, pydantic's) come back as a datetime.timezone
        # with the same offset and wall time: the instant is exact, zone rules are not kept.
        offset = value.utcoffset()
        if offset is None:
            raise _Unsupported(value, f"its tzinfo {tz!r} gives no UTC offset")
        # The ISO text carries the offset, but Python 3.11's fromisoformat drops a sub-second
        # offset and a named fixed zone (timezone(h, "CET")) has a name ISO cannot hold.
        name = tz.tzname(None) if isinstance(tz, dt.timezone) else None
        if name == dt.timezone(offset).tzname(None):
            name = None
        if offset.microseconds or name is not None:
            out["off"] = offset // _MICROSECOND
            if name is not None:
                out["tzname"] = name
    if value.fold:
        out["fold"] = 1
    return out


_MICROSECOND = dt.timedelta(microseconds=1)


def _datetime(v: dt.datetime) -> Any:
    return _tz_fields(v, {TAG: "dt", "v": v.isoformat()})


def _time(v: dt.time) -> Any:
    return _tz_fields(v, {TAG: "time", "v": v.isoformat()})


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    dict: _dict,
    list: _list,
    tuple: lambda v: {TAG: "tuple", "v": _list(v)},
    set: lambda v: {TAG: "set", "v": _list(v)},
    frozenset: lambda v: {TAG: "fset", "v": _list(v)},
    bytearray: lambda v: {TAG: "ba", "v": bytes(v)},
    dt.datetime: _datetime,
    dt.date: lambda v: {TAG: "date", "v": v.isoformat()},
    dt.time: _time,
    dt.timedelta: lambda v: {TAG: "td", "v": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda v: {TAG: "uuid", "v": str(v)},
    Decimal: lambda v: {TAG: "dec", "v": str(v)},
}
_BUILTIN: frozenset[type] = frozenset(_ENCODERS) | _PASS | {int}


def _encoder_for(v: Any) -> Callable[[Any], Any]:
    """The encoder for a user class, found once per class and then cached in ``_ENCODERS``."""
    cls = type(v)
    encode: Callable[[Any], Any]
    if isinstance(v, Enum):
        path = _class_path(v)
        encode = lambda m: {TAG: "enum", "c": path, "v": _plain(m.value)}  # noqa: E731
    elif isinstance(v, BaseModel):
        path = _class_path(v)
        if isinstance(v, RootModel):
            encode = lambda m: {TAG: "model", "c": path, "v": _plain(m.root)}  # noqa: E731
        else:
            encode = lambda m: {TAG: "model", "c": path, "v": _model_fields(m)}  # noqa: E731
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        path = _class_path(v)
        names = tuple(f.name for f in dataclasses.fields(v))
        encode = lambda o: {  # noqa: E731
            TAG: "dc",
            "c": path,
            "v": {name: _plain(getattr(o, name)) for name in names},
        }
    elif isinstance(v, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        path = _class_path(v)
        encode = lambda o: {TAG: "nt", "c": path, "v": _list(o)}  # noqa: E731
    else:
        raise _Unsupported(v)
    _ENCODERS[cls] = encode
    return encode


def _model_fields(m: BaseModel) -> dict[str, Any]:
    # Field by field rather than model_dump(): nested models (also under ``Any``), tuples, sets
    # and enums keep their types through their own tags, user serializers (which may be lossy
    # or one-way) are not involved, and computed fields are not stored as if they were input.
    fields = {name: _plain(getattr(m, name)) for name in type(m).model_fields}
    extra = m.__pydantic_extra__
    if extra:
        fields.update((k, _plain(x)) for k, x in extra.items())
    return fields


_CLASS_PATHS: dict[type, str] = {}


def _class_path(v: Any) -> str:
    cls = type(v)
    path = _CLASS_PATHS.get(cls)
    if path is None:
        path = f"{cls.__module__}:{cls.__qualname__}"
        # Checked when storing, not when loading: a value whose class cannot be found again
        # by name would be committed and then break every replay.
        if _loaded_class(path) is not cls:
            raise _Unsupported(
                v,
                f"its class cannot be found again by its name {path!r}; define it at module "
                "level, or register a codec with outlast.values.register_codec",
            )
        _CLASS_PATHS[cls] = path
    return path


def _loaded_class(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None or not qualname:
        return None
    for part in qualname.split("."):
        try:
            namespace = vars(obj)
        except TypeError:
            return None
        obj = namespace.get(part)
        if obj is None:
            return None
    return obj


def _qualname(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------
# Registered codecs
# --------------------------------------------------------------------------------------------

_CODECS: dict[str, tuple[type, Callable[[Any], Any]]] = {}
_CODEC_ENCODE: dict[type, Callable[[Any], Any]] = {}  # the user's encoders, for error paths


def register_codec(
    cls: type[T], name: str, encode: Callable[[T], Any], decode: Callable[[Any], T]
) -> None:
    """Store instances of exactly ``cls`` as ``{"__ol__": "codec", "n": name, "v": encode(x)}``.

    ``encode`` may return anything :func:`to_plain` supports (it is converted in turn);
    ``decode`` receives that value back and must rebuild the instance. ``name`` is what is
    stored, so keep it stable across deploys. Subclasses are not covered: register each.
    Registering a name again for the same class replaces its codec (module reloads).
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_codec needs a class, not {cls!r}")
    if not isinstance(name, str) or not name:
        raise ValueError("register_codec needs a non-empty name")
    if cls in _BUILTIN:
        raise ValueError(f"{_qualname(cls)} is built in and cannot be given a codec")
    known = _CODECS.get(name)
    if known is not None and known[0] is not cls:
        raise ValueError(f"codec name {name!r} is already registered for {_qualname(known[0])}")
    for other, (registered, _) in list(_CODECS.items()):
        if registered is cls and other != name:
            del _CODECS[other]  # one name per class, so the stored name is unambiguous
    _CODECS[name] = (cls, decode)
    _CODEC_ENCODE[cls] = encode
    _ENCODERS[cls] = lambda v: {TAG: "codec", "n": name, "v": _plain(encode(v))}


# --------------------------------------------------------------------------------------------
# from_plain
# --------------------------------------------------------------------------------------------


def from_plain(plain: Any) -> Any:
    """The inverse of :func:`to_plain`; raises :class:`StoredValueError` on data it can't read.

    Untagged plain values (including data stored before tags existed) come back unchanged.
    """
    t = type(plain)
    if t is dict:
        if TAG in plain:
            return _untag(plain)
        return {k: v if type(v) in _BACK_PASS else _back(v) for k, v in plain.items()}
    if t is list:
        return [x if type(x) in _BACK_PASS else _back(x) for x in plain]
    return plain


_back = from_plain
_BACK_PASS: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes})


def _untag(d: dict[str, Any]) -> Any:
    tag = d[TAG]
    decode = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decode is None:
        raise StoredValueError(f"unknown type tag {tag!r} in stored value")
    try:
        return decode(d)
    except StoredValueError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise StoredValueError(f"cannot read stored {tag!r} value: {exc!r}") from exc


def _items(d: dict[str, Any]) -> list[Any]:
    items = d["v"]
    if type(items) is not list:
        raise StoredValueError(f"stored {d[TAG]!r} value holds {type(items).__name__}, not list")
    return [_back(x) for x in items]


def _stored_class(d: dict[str, Any], kind: str, check: Callable[[type], bool]) -> Any:
    path = d["c"]
    if not isinstance(path, str):
        raise StoredValueError(f"stored {kind} class path is {path!r}")
    module_name = path.partition(":")[0]
    if module_name not in sys.modules:
        raise StoredValueError(
            f"stored value is a {kind} of class {path!r}, but module {module_name!r} is not "
            "loaded; import it before reading the value (stored data never imports modules)"
        )
    cls = _loaded_class(path)
    if not isinstance(cls, type) or not check(cls):
        raise StoredValueError(f"stored value names {path!r}, which is not a loaded {kind} class")
    return cls


def _with_tz(value: Any, d: dict[str, Any]) -> Any:
    fold = d.get("fold", 0)
    key = d.get("tz")
    if key is not None:
        # ZoneInfo validates the key (no absolute or parent paths) and reads only tz data.
        # Keep the stored wall time and fold, so a time in a gap or overlap is the same value.
        return value.replace(tzinfo=ZoneInfo(key), fold=fold)
    offset = d.get("off")
    if offset is not None:
        delta = dt.timedelta(microseconds=offset)
        name = d.get("tzname")
        tz = dt.timezone(delta) if name is None else dt.timezone(delta, name)
        return value.replace(tzinfo=tz, fold=fold)
    return value.replace(fold=1) if fold else value


def _payload(d: dict[str, Any], kind: type[T]) -> T:
    v = d["v"]
    if type(v) is not kind:
        kind_name = kind.__name__
        raise StoredValueError(f"stored {d[TAG]!r} value holds {type(v).__name__}, not {kind_name}")
    return v


def _ints(d: dict[str, Any]) -> list[int]:
    v = _payload(d, list)
    if not all(type(x) is int for x in v):
        raise StoredValueError(f"stored {d[TAG]!r} value is {v!r}, not a list of integers")
    return v


def _decode_map(d: dict[str, Any]) -> dict[Any, Any]:
    out = {}
    for pair in d["v"]:
        k, v = pair
        out[_back(k)] = _back(v)
    return out


def _decode_model(d: dict[str, Any]) -> BaseModel:
    cls = _stored_class(d, "pydantic model", lambda c: issubclass(c, BaseModel))
    data = _back(d["v"]) if issubclass(cls, RootModel) else _fields(d)
    if _VALIDATE_BY_NAME:
        return cls.model_validate(data, by_name=True)  # type: ignore[no-any-return]
    return cls.model_validate(data)  # type: ignore[no-any-return]


def _fields(d: dict[str, Any]) -> dict[str, Any]:
    fields = d["v"]
    if type(fields) is not dict:
        raise StoredValueError(f"stored {d[TAG]!r} fields are {type(fields).__name__}, not a map")
    return {k: _back(v) for k, v in fields.items()}


def _decode_dataclass(d: dict[str, Any]) -> Any:
    cls = _stored_class(d, "dataclass", dataclasses.is_dataclass)
    fields = _fields(d)
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in fields.items() if k in init})
    for k, v in fields.items():
        if k not in init:
            # Fields outside __init__ are set as stored, also on frozen dataclasses.
            object.__setattr__(obj, k, v)
    return obj


def _decode_codec(d: dict[str, Any]) -> Any:
    name = d["n"]
    codec = _CODECS.get(name)
    if codec is None:
        raise StoredValueError(
            f"stored value uses codec {name!r}, which is not registered; call register_codec "
            "before reading the value"
        )
    return codec[1](_back(d["v"]))


def _decode_int(d: dict[str, Any]) -> int:
    return int(_payload(d, str), 16)


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "map": _decode_map,
    "tuple": lambda d: tuple(_items(d)),
    "set": lambda d: set(_items(d)),
    "fset": lambda d: frozenset(_items(d)),
    "ba": lambda d: bytearray(_payload(d, bytes)),
    "dt": lambda d: _with_tz(dt.datetime.fromisoformat(_payload(d, str)), d),
    "date": lambda d: dt.date.fromisoformat(_payload(d, str)),
    "time": lambda d: _with_tz(dt.time.fromisoformat(_payload(d, str)), d),
    "td": lambda d: dt.timedelta(*_ints(d)),
    "uuid": lambda d: uuid.UUID(_payload(d, str)),
    "dec": lambda d: Decimal(_payload(d, str)),
    "int": _decode_int,
    "enum": lambda d: _stored_class(d, "enum", lambda c: issubclass(c, Enum))(_back(d["v"])),
    "model": _decode_model,
    "dc": _decode_dataclass,
    "nt": lambda d: _stored_class(
        d, "named tuple", lambda c: issubclass(c, tuple) and hasattr(c, "_fields")
    )(*_items(d)),
    "codec": _decode_codec,
}

_VALIDATE_BY_NAME = "by_name" in inspect.signature(BaseModel.model_validate).parameters


# --------------------------------------------------------------------------------------------
# Error reporting: the slow walks, run only after something went wrong
# --------------------------------------------------------------------------------------------


def _children(obj: Any) -> list[tuple[str, Any]]:
    """What :func:`to_plain` would descend into, each with its path segment."""
    t = type(obj)
    if t in _PASS or t is int:
        return []
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out.append((f"<key {k!r}>", k))
            out.append((f"[{k!r}]", v))
        return out
    if isinstance(obj, Enum):
        return [(".value", obj.value)]
    if isinstance(obj, list | tuple):
        return [(f"[{i}]", x) for i, x in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        return [(f"<item {x!r}>", x) for x in obj]
    if isinstance(obj, BaseModel):
        if isinstance(obj, RootModel):
            return [(".root", obj.root)]
        names = list(type(obj).model_fields) + list(obj.__pydantic_extra__ or ())
        return [(f".{n}", getattr(obj, n)) for n in names]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f".{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    encode = _CODEC_ENCODE.get(t)
    if encode is not None:
        try:
            return [("<encoded>", encode(obj))]
        except Exception:  # noqa: BLE001 - only explaining an earlier failure; blame obj itself
            return []
    return []


def _find_path(root: Any, bad: Any) -> str | None:
    """The path from ``root`` to the object ``bad`` (by identity), or None."""
    if root is bad:
        return ""
    seen = {id(root)}
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        obj, path = stack.pop()
        for segment, child in _children(obj):
            if child is bad:
                return path + segment
            if id(child) not in seen:
                seen.add(id(child))
                stack.append((child, path + segment))
    return None


def _find_cycle(root: Any) -> tuple[str, type] | None:
    """The path to the first container that contains itself, and its type, or None."""
    on_path = {id(root)}
    stack = [(root, iter(_children(root)), "")]
    while stack:
        obj, children, path = stack[-1]
        for segment, child in children:
            if id(child) in on_path:
                return path + segment, type(child)
            on_path.add(id(child))
            stack.append((child, iter(_children(child)), path + segment))
            break
        else:
            stack.pop()
            on_path.discard(id(obj))
    return None


# --------------------------------------------------------------------------------------------
# rebuild
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _adapter_for(fn: Callable[..., Any]) -> tuple[type | None, TypeAdapter[Any]] | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations just mean "no rebuilding"
        return None
    annotation = hints.get("return", inspect.Signature.empty)
    if annotation in (inspect.Signature.empty, Any, object, None, type(None)):
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot model is left alone
        return None
    return (annotation if isinstance(annotation, type) else None), adapter


def rebuild(fn: Callable[..., Any], plain: Any) -> Any:
    """``plain`` (as stored: what ``unpack`` gave) turned back into ``fn``'s result.

    The type tags decide first (:func:`from_plain`). Then, when ``fn`` declares a return type
    pydantic can model, the value is validated against it, as before tags existed: that turns
    untagged data (e.g. a model stored as a plain dict) into the declared type. A value that is
    already an instance of a declared class is returned as it is, so a ``StrEnum`` member under
    ``-> str`` stays the member. A value that does not validate is returned unvalidated.
    """
    value = from_plain(plain)
    target = getattr(fn, "__func__", fn)
    try:
        found = _adapter_for(target)
    except TypeError:  # unhashable callables (some partials) are not cached
        found = None
    if found is None:
        return value
    cls, adapter = found
    if cls is not None and isinstance(value, cls):
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return value


# --------------------------------------------------------------------------------------------
# display
# --------------------------------------------------------------------------------------------


def to_json_view(plain: Any) -> Any:
    """A stored value as JSON-friendly data, for people and tools (``runs show``, the API).

    The classes named by tags may not be loaded in the process that shows a run (the CLI does not
    import the user's code), so tags are resolved when they can be and stripped when they cannot.
    """
    try:
        return pydantic_core.to_jsonable_python(from_plain(plain), fallback=repr)
    except StoredValueError:
        return pydantic_core.to_jsonable_python(_untagged(plain), fallback=repr)


def _untagged(plain: Any) -> Any:
    if isinstance(plain, list):
        return [_untagged(v) for v in plain]
    if isinstance(plain, dict):
        if TAG in plain and isinstance(plain[TAG], str):
            return _untagged(plain.get("v"))
        return {k: _untagged(v) for k, v in plain.items()}
    return plain


@lru_cache(maxsize=1024)
def _input_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations just mean "no validation"
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2:
        return None
    annotation = hints.get(positional[1].name, inspect.Signature.empty)
    if annotation in (inspect.Signature.empty, Any, object):
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot model is not validated
        return None


def input_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """A validator for ``fn(ctx, input)``'s input annotation, or None if it declares none."""
    target = getattr(fn, "__func__", fn)
    try:
        return _input_adapter(target)
    except TypeError:  # unhashable callables are not cached
        return None
