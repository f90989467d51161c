"""Decode params into wire structs and word failures as the reference's serde does.

msgspec does the decoding. Only when it fails does `explain()` walk the value against the
struct's type description and produce serde's text (`missing field `x``, `invalid type: map,
expected a string`, `invalid number`, `unknown variant ...`), checking members in input order as
serde does. Pure data: stdlib and msgspec only.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from execserver.protocol.base import Base64Bytes, NonZeroUsize, dec_hook, declared_order
from execserver.protocol.rust import rust_debug_str, unexpected, unknown_variant

T = TypeVar("T")


class ParamsError(ValueError):
    """Params that do not fit the method's struct; `str(exc)` is serde's message."""


def decode_params(obj: Any, tp: type[T]) -> T:
    """Convert a decoded JSON value into `tp`, raising `ParamsError` with serde's wording.

    `obj` is the already-decoded `params` member (`None` when absent or null).
    """
    if isinstance(obj, dict):
        try:
            return msgspec.convert(obj, tp, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            problem = explain(obj, tp)
            if problem is not None:
                raise ParamsError(problem) from None
            # serde also accepts structs in their positional (array) form anywhere.
            try:
                return msgspec.convert(_objects(obj, _type_info(tp)), tp, dec_hook=dec_hook)
            except msgspec.ValidationError:
                raise ParamsError(str(exc)) from None
    info = _type_info(tp)
    if isinstance(obj, list) and isinstance(info, mi.StructType):
        return decode_params(_positional(obj, info), tp)
    raise ParamsError(_mismatch(obj, info) or f"invalid params for {tp.__name__}")


def decode_unit(obj: Any) -> None:
    """Check the params of a method whose params type is serde's unit `()`."""
    if obj is None or obj == {}:
        return
    raise ParamsError(f"invalid type: {unexpected(obj)}, expected unit")


_TYPE_INFO: dict[type, mi.Type] = {}


def _type_info(tp: type) -> mi.Type:
    info = _TYPE_INFO.get(tp)
    if info is None:
        info = _TYPE_INFO[tp] = mi.type_info(tp)
    return info


def explain(obj: Any, tp: type) -> str | None:
    """Return serde's message for the first problem in `obj` as a `tp`, or None if none found."""
    return _check(obj, _type_info(tp))


def _positional(items: list[Any], info: mi.StructType) -> dict[str, Any]:
    cls = info.cls
    expected = getattr(cls, "rust_len", 0) or len(info.fields)
    minimum = getattr(cls, "rust_min_len", None) or expected
    if len(items) < minimum:
        noun = "element" if expected == 1 else "elements"
        raise ParamsError(
            f"invalid length {len(items)}, expected struct {_struct_name(info)} "
            f"with {expected} {noun}"
        )
    if len(items) > expected:
        raise ParamsError(f"invalid length {len(items)}, expected fewer elements in array")
    return {f.encode_name: v for f, v in zip(info.fields, items, strict=False)}


def _objects(value: Any, info: mi.Type) -> Any:
    """`value` with every positional (array) struct turned into an object, as serde reads it."""
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        members = [
            t for t in info.types if isinstance(t, mi.StructType | mi.ListType | mi.DictType)
        ]
        return _objects(value, members[0]) if len(members) == 1 else value
    if isinstance(info, mi.StructType):
        if isinstance(value, list):
            value = _positional(value, info)
        if isinstance(value, dict):
            fields = {f.encode_name: f for f in info.fields}
            return {k: _objects(v, fields[k].type) if k in fields else v for k, v in value.items()}
        return value
    if isinstance(info, mi.ListType) and isinstance(value, list):
        return [_objects(item, info.item_type) for item in value]
    if isinstance(info, mi.DictType) and isinstance(value, dict):
        return {k: _objects(v, info.value_type) for k, v in value.items()}
    return value


def _struct_name(info: mi.StructType) -> str:
    return getattr(info.cls, "rust_name", "") or info.cls.__name__


def _expected(info: mi.Type) -> str:
    if isinstance(info, mi.Metadata):
        rust = (info.extra or {}).get("rust")
        return str(rust) if rust else _expected(info.type)
    if isinstance(info, mi.StrType | mi.CustomType):
        return "a string"
    if isinstance(info, mi.BoolType):
        return "a boolean"
    if isinstance(info, mi.IntType):
        return "i64"
    if isinstance(info, mi.FloatType):
        return "f64"
    if isinstance(info, mi.ListType):
        return "a sequence"
    if isinstance(info, mi.DictType):
        return "a map"
    if isinstance(info, mi.StructType):
        return f"struct {_struct_name(info)}"
    if isinstance(info, mi.NoneType):
        return "unit"
    if isinstance(info, mi.LiteralType):
        return "variant identifier"
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return _expected(members[0]) if len(members) == 1 else "any valid value"
    return "a value"


def _mismatch(value: Any, info: mi.Type, content: bool = False) -> str | None:
    """The error for a value of the wrong JSON kind, or None if the kind fits."""
    base = info.type if isinstance(info, mi.Metadata) else info
    if isinstance(base, mi.AnyType):
        return None
    kinds: dict[type[mi.Type], tuple[type, ...]] = {
        mi.StrType: (str,),
        mi.BoolType: (bool,),
        mi.ListType: (list,),
        mi.DictType: (dict,),
        mi.StructType: (dict, list),
        mi.NoneType: (type(None),),
        mi.LiteralType: (str,),
    }
    if isinstance(base, mi.IntType | mi.FloatType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"invalid type: {unexpected(value, content=content)}, expected {_expected(info)}"
        return None
    allowed = kinds.get(type(base))
    if allowed is None:
        return None
    if isinstance(value, bool) and bool not in allowed:
        return f"invalid type: {unexpected(value, content=content)}, expected {_expected(info)}"
    if not isinstance(value, allowed):
        return f"invalid type: {unexpected(value, content=content)}, expected {_expected(info)}"
    return None


def _check(value: Any, info: mi.Type, content: bool = False) -> str | None:
    """`content`: inside an internally tagged enum (serde renders values differently there)."""
    if isinstance(info, mi.UnionType):
        return _check_union(value, info, content)
    mismatch = _mismatch(value, info, content)
    if mismatch is not None:
        return mismatch
    base = info.type if isinstance(info, mi.Metadata) else info
    if isinstance(base, mi.IntType):
        limit = (info.extra or {}).get("max") if isinstance(info, mi.Metadata) else None
        return _check_int(value, base, limit)
    if isinstance(base, mi.ListType):
        for item in value:
            problem = _check(item, base.item_type, content)
            if problem is not None:
                return problem
        return None
    if isinstance(base, mi.DictType):
        for item in value.values():
            problem = _check(item, base.value_type, content)
            if problem is not None:
                return problem
        return None
    if isinstance(base, mi.LiteralType):
        return _check_variant(value, base.values)
    if isinstance(base, mi.StructType):
        return _check_struct(value, base, content)
    if isinstance(base, mi.CustomType):
        return _check_custom(value, base.cls, content)
    return None


def _check_int(value: int | float, info: mi.IntType, limit: int | None = None) -> str | None:
    # The reference parses params with arbitrary-precision numbers: any number that does not fit
    # the target integer type (negative, fractional, too large) is reported as "invalid number".
    if isinstance(value, float):
        return "invalid number"
    if info.ge is not None and value < info.ge:
        return "invalid number"
    if info.le is not None and value > info.le:
        return "invalid number"
    if limit is not None and value > limit:  # bounds past int64 (base.U64)
        return "invalid number"
    return None


def _check_variant(value: str, variants: tuple[Any, ...]) -> str | None:
    if value in variants:
        return None
    return unknown_variant(value, declared_order(variants))


def _check_union(value: Any, info: mi.UnionType, content: bool) -> str | None:
    members = [t for t in info.types if not isinstance(t, mi.NoneType)]
    if value is None and len(members) < len(info.types):
        return None
    structs = [t for t in members if isinstance(t, mi.StructType)]
    if structs and structs[0].tag_field is not None and len(structs) == len(members):
        return _check_tagged(value, structs, content)
    if len(members) == 1:
        return _check(value, members[0], content)
    for member in members:
        if _mismatch(value, member, content) is None:
            return _check(value, member, content)
    return _mismatch(value, members[0], content)


def _check_tagged(value: Any, variants: list[mi.StructType], content: bool) -> str | None:
    """serde's internally tagged enum: `{"type": "<tag>", ...}` (members are buffered first)."""
    tag_field = variants[0].tag_field
    assert tag_field is not None
    enum_name = getattr(variants[0].cls, "rust_enum", "") or "enum"
    if not isinstance(value, dict):
        found = unexpected(value, content=content)
        return f"invalid type: {found}, expected internally tagged enum {enum_name}"
    if tag_field not in value:
        return f"missing field `{tag_field}`"
    tag = value[tag_field]
    for variant in variants:
        if variant.tag == tag:
            return _check_struct(value, variant, content=True)
    if not isinstance(tag, str):
        return f"invalid type: {unexpected(tag, content=True)}, expected variant identifier"
    return _check_variant(tag, tuple(v.tag for v in variants))


def _check_struct(value: Any, info: mi.StructType, content: bool = False) -> str | None:
    if isinstance(value, list):
        try:
            value = _positional(value, info)
        except ParamsError as exc:
            return str(exc)
    fields = {f.encode_name: f for f in info.fields}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            continue
        problem = _check(item, field.type, content)
        if problem is not None:
            return problem
    for field in info.fields:
        if field.required and field.encode_name not in value:
            return f"missing field `{field.encode_name}`"
    return None


def _check_custom(value: Any, cls: type, content: bool) -> str | None:
    if content and not isinstance(value, str) and cls is not NonZeroUsize:
        return f"invalid type: {unexpected(value, content=True)}, expected a string"
    try:
        dec_hook(cls, value)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


__all__ = [
    "Base64Bytes",
    "ParamsError",
    "decode_params",
    "decode_unit",
    "explain",
    "rust_debug_str",
    "unexpected",
]
