"""serde's error wording, and an explainer that finds the error serde would report for a value.

msgspec does the decoding (`from_value`). Only when it refuses does `explain` walk the value
against the msgspec type description and word the first problem as serde does: map members in
input order, then missing fields; array elements in order, then the array's length. A `Format`
holds what differs between the deserializers serde runs over (serde_json's `Value`, the toml
crate). Struct metadata comes from class attributes: `rust_name` (serde's struct name),
`rust_len` (its field count), `rust_defaults` (wire names of `#[serde(default)]` fields),
`rust_enum` (an internally tagged enum's name); msgspec's `forbid_unknown_fields` stands for
`#[serde(deny_unknown_fields)]`. Pure: stdlib and msgspec only.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import msgspec.inspect as mi

from execserver.compat.rust import display_f64, rust_debug_str

__all__ = [
    "JSON_VALUE",
    "TOML",
    "DecHook",
    "Format",
    "SerdeError",
    "Unexpected",
    "declared_order",
    "explain",
    "from_value",
    "toml_unexpected",
    "unexpected",
    "unknown_field",
    "unknown_variant",
    "variants",
]

T = TypeVar("T")
DecHook = Callable[[type, Any], Any]


# --- wording -----------------------------------------------------------------------------------


def unexpected(value: Any, *, content: bool = False) -> str:
    """serde's `Unexpected` rendering of a JSON value (serde_json's `Value`).

    The reference reads params as arbitrary-precision JSON, where numbers print as plain
    `number`; inside internally tagged enums serde buffers values first (`content`), and then
    numbers print with their value and null as `unit value`.
    """
    if value is None:
        return "unit value" if content else "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`" if content else "number"
    if isinstance(value, float):
        return f"floating point `{value!r}`" if content else "number"
    if isinstance(value, str):
        return f"string {rust_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def toml_unexpected(value: Any, *, content: bool = False) -> str:
    """serde's `Unexpected` for a value the toml crate hands over (tables and datetimes are
    maps; TOML has no null, and `content` makes no difference)."""
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        text = display_f64(value)
        if math.isfinite(value) and "." not in text:
            text += ".0"  # serde's WithDecimalPoint
        return f"floating point `{text}`"
    if isinstance(value, str):
        return f"string {rust_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _one_of(names: Sequence[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def unknown_variant(value: str, variants: tuple[str, ...]) -> str:
    """serde's message for an enum tag that is not one of `variants` (declaration order)."""
    if not variants:
        return f"unknown variant `{value}`, there are no variants"
    return f"unknown variant `{value}`, expected {_one_of(variants)}"


def unknown_field(name: str, fields: Sequence[str]) -> str:
    """serde's message for a member a `deny_unknown_fields` struct does not have."""
    if not fields:
        return f"unknown field `{name}`, there are no fields"
    return f"unknown field `{name}`, expected {_one_of(fields)}"


_VARIANT_ORDER: dict[frozenset[Any], tuple[Any, ...]] = {}


def variants(literal: Any) -> Any:
    """Register a `Literal` so messages list its variants in declaration order."""
    args = typing.get_args(literal)
    _VARIANT_ORDER[frozenset(args)] = args
    return literal


def declared_order(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The variants of a `Literal` in declaration order (msgspec reports them sorted)."""
    return _VARIANT_ORDER.get(frozenset(values), values)


# --- the explainer -----------------------------------------------------------------------------


class Unexpected(Protocol):
    """A renderer of serde's `Unexpected` (`unexpected`, `toml_unexpected`)."""

    def __call__(self, value: Any, *, content: bool = False) -> str: ...


@dataclass(frozen=True, slots=True)
class Format:
    """What distinguishes the deserializer serde runs over.

    Attributes:
        unexpected: how a value is named in ``invalid type: <value>, expected ...``.
        rejects_extra_elements: whether a struct read from an array refuses elements past its
            fields (``invalid length N, expected fewer elements in array``); the toml crate
            ignores them.

    Integers out of range are worded as serde_json's arbitrary-precision numbers are
    (``invalid number``): no TOML struct of ours has integer members.
    """

    unexpected: Unexpected
    rejects_extra_elements: bool


JSON_VALUE = Format(unexpected, rejects_extra_elements=True)
TOML = Format(toml_unexpected, rejects_extra_elements=False)


class SerdeError(ValueError):
    """The first problem serde reports; ``str()`` is its message, `path` the map keys (struct
    members and map entries, never array indices) from the top to the offending value."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return self.message


def from_value(obj: Any, tp: type[T], fmt: Format, *, dec_hook: DecHook | None = None) -> T:
    """Convert a decoded value into `tp` as serde would.

    Args:
        obj: the value as decoded from JSON or TOML (dicts, lists, scalars).
        tp: the msgspec type that mirrors serde's target type.
        fmt: the deserializer serde runs over (`JSON_VALUE`, `TOML`).
        dec_hook: msgspec's hook for custom types; a `ValueError` or `TypeError` it raises
            carries serde's message for the bad value.

    Raises:
        SerdeError: with serde's message for the first problem.
    """
    try:
        return msgspec.convert(obj, tp, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        error = explain(obj, tp, fmt, dec_hook=dec_hook)
        if error is not None:
            raise error from None
        # serde also reads a struct from its positional (array) form, anywhere.
        try:
            return msgspec.convert(_objects(obj, _type_info(tp)), tp, dec_hook=dec_hook)
        except msgspec.ValidationError:
            raise SerdeError(str(exc)) from None


def explain(
    obj: Any, tp: type, fmt: Format, *, dec_hook: DecHook | None = None
) -> SerdeError | None:
    """serde's error for the first problem in `obj` as a `tp`, or None if it finds none."""
    try:
        _Explainer(fmt, dec_hook).check(obj, _type_info(tp), (), content=False)
    except SerdeError as error:
        return error
    return None


_TYPE_INFO: dict[type, mi.Type] = {}


def _type_info(tp: type) -> mi.Type:
    info = _TYPE_INFO.get(tp)
    if info is None:
        info = _TYPE_INFO[tp] = mi.type_info(tp)
    return info


def _struct_name(info: mi.StructType) -> str:
    return getattr(info.cls, "rust_name", "") or info.cls.__name__


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
            value = {f.encode_name: v for f, v in zip(info.fields, value, strict=False)}
        if isinstance(value, dict):
            fields = {f.encode_name: f for f in info.fields}
            return {k: _objects(v, fields[k].type) if k in fields else v for k, v in value.items()}
        return value
    if isinstance(info, mi.ListType) and isinstance(value, list):
        return [_objects(item, info.item_type) for item in value]
    if isinstance(info, mi.DictType) and isinstance(value, dict):
        return {k: _objects(v, info.value_type) for k, v in value.items()}
    return value


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


_KINDS: dict[type[mi.Type], tuple[type, ...]] = {
    mi.StrType: (str,),
    mi.BoolType: (bool,),
    mi.ListType: (list,),
    mi.DictType: (dict,),
    mi.StructType: (dict, list),
    mi.NoneType: (type(None),),
    mi.LiteralType: (str,),
}


class _Explainer:
    """One walk; raises `SerdeError` at the first problem. `content`: inside an internally
    tagged enum, where serde buffers values and names them differently."""

    def __init__(self, fmt: Format, dec_hook: DecHook | None) -> None:
        self._fmt = fmt
        self._dec_hook = dec_hook

    def _invalid_type(self, value: Any, info: mi.Type, content: bool) -> str:
        found = self._fmt.unexpected(value, content=content)
        return f"invalid type: {found}, expected {_expected(info)}"

    def mismatch(self, value: Any, info: mi.Type, content: bool) -> str | None:
        """The error for a value of the wrong kind, or None if the kind fits."""
        base = info.type if isinstance(info, mi.Metadata) else info
        if isinstance(base, mi.IntType | mi.FloatType):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return self._invalid_type(value, info, content)
            return None
        allowed = _KINDS.get(type(base))
        if allowed is None:
            return None
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            return self._invalid_type(value, info, content)
        return None

    def check(self, value: Any, info: mi.Type, path: tuple[str, ...], *, content: bool) -> None:
        if isinstance(info, mi.UnionType):
            self._union(value, info, path, content)
            return
        problem = self.mismatch(value, info, content)
        if problem is not None:
            raise SerdeError(problem, path)
        base = info.type if isinstance(info, mi.Metadata) else info
        if isinstance(base, mi.IntType):
            limit = (info.extra or {}).get("max") if isinstance(info, mi.Metadata) else None
            self._int(value, base, limit, path)
        elif isinstance(base, mi.ListType):
            for item in value:
                self.check(item, base.item_type, path, content=content)
        elif isinstance(base, mi.DictType):
            for key, item in value.items():
                self.check(item, base.value_type, (*path, str(key)), content=content)
        elif isinstance(base, mi.LiteralType):
            self._variant(value, base.values, path)
        elif isinstance(base, mi.StructType):
            self._struct(value, base, path, content)
        elif isinstance(base, mi.CustomType):
            self._custom(value, base.cls, path, content)

    def _int(
        self, value: int | float, info: mi.IntType, limit: int | None, path: tuple[str, ...]
    ) -> None:
        # The reference parses params with arbitrary-precision numbers: any number that does
        # not fit the target integer type (negative, fractional, too large) is "invalid number".
        if (
            isinstance(value, float)
            or (info.ge is not None and value < info.ge)
            or (info.le is not None and value > info.le)
            or (limit is not None and value > limit)  # bounds past int64 (`max` in the Meta)
        ):
            raise SerdeError("invalid number", path)

    def _variant(self, value: str, values: tuple[Any, ...], path: tuple[str, ...]) -> None:
        if value not in values:
            raise SerdeError(unknown_variant(value, declared_order(values)), path)

    def _union(self, value: Any, info: mi.UnionType, path: tuple[str, ...], content: bool) -> None:
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if value is None and len(members) < len(info.types):
            return
        structs = [t for t in members if isinstance(t, mi.StructType)]
        if structs and structs[0].tag_field is not None and len(structs) == len(members):
            self._tagged(value, structs, path, content)
            return
        if len(members) == 1:
            self.check(value, members[0], path, content=content)
            return
        for member in members:
            if self.mismatch(value, member, content) is None:
                self.check(value, member, path, content=content)
                return
        raise SerdeError(self._invalid_type(value, members[0], content), path)

    def _tagged(
        self, value: Any, variants: list[mi.StructType], path: tuple[str, ...], content: bool
    ) -> None:
        """serde's internally tagged enum: `{"type": "<tag>", ...}` (members buffered first)."""
        tag_field = variants[0].tag_field
        assert tag_field is not None
        enum_name = getattr(variants[0].cls, "rust_enum", "") or "enum"
        if not isinstance(value, dict):
            found = self._fmt.unexpected(value, content=content)
            raise SerdeError(
                f"invalid type: {found}, expected internally tagged enum {enum_name}", path
            )
        if tag_field not in value:
            raise SerdeError(f"missing field `{tag_field}`", path)
        tag = value[tag_field]
        for variant in variants:
            if variant.tag == tag:
                self._struct(value, variant, path, content=True)
                return
        if not isinstance(tag, str):
            found = self._fmt.unexpected(tag, content=True)
            raise SerdeError(f"invalid type: {found}, expected variant identifier", path)
        self._variant(tag, tuple(v.tag for v in variants), path)

    def _struct(
        self, value: Any, info: mi.StructType, path: tuple[str, ...], content: bool
    ) -> None:
        if isinstance(value, list):
            self._struct_seq(value, info, path, content)
            return
        fields = {f.encode_name: f for f in info.fields}
        for key, item in value.items():
            field = fields.get(key)
            if field is not None:
                self.check(item, field.type, (*path, key), content=content)
            elif info.forbid_unknown_fields and key != info.tag_field:
                raise SerdeError(unknown_field(key, list(fields)), path)
        for field in info.fields:
            if field.required and field.encode_name not in value:
                raise SerdeError(f"missing field `{field.encode_name}`", path)

    def _struct_seq(
        self, items: list[Any], info: mi.StructType, path: tuple[str, ...], content: bool
    ) -> None:
        """serde's `visit_seq`: each field from the next element, in declaration order; a
        missing element is an error unless the field has `#[serde(default)]`."""
        count = getattr(info.cls, "rust_len", 0) or len(info.fields)
        defaults: frozenset[str] = getattr(info.cls, "rust_defaults", frozenset())
        for index in range(count):
            # The Rust struct may have members msgspec's lacks (rust_len): unchecked, required.
            field = info.fields[index] if index < len(info.fields) else None
            if index < len(items):
                if field is not None:
                    self.check(items[index], field.type, path, content=content)
            elif field is None or field.encode_name not in defaults:
                noun = "element" if count == 1 else "elements"
                raise SerdeError(
                    f"invalid length {index}, expected struct {_struct_name(info)} "
                    f"with {count} {noun}",
                    path,
                )
        if self._fmt.rejects_extra_elements and len(items) > count:
            raise SerdeError(f"invalid length {len(items)}, expected fewer elements in array", path)

    def _custom(self, value: Any, cls: type, path: tuple[str, ...], content: bool) -> None:
        # Inside buffered enum content serde names the value itself (`integer `5``), which the
        # hook's own wording does not: types read from a string say so here; number types
        # (int subclasses) word content errors themselves.
        if content and not isinstance(value, str) and not issubclass(cls, int):
            found = self._fmt.unexpected(value, content=True)
            raise SerdeError(f"invalid type: {found}, expected a string", path)
        if self._dec_hook is None:
            return
        try:
            self._dec_hook(cls, value)
        except (ValueError, TypeError) as exc:
            raise SerdeError(str(exc), path) from None
