"""Field converters, validators and decoding helpers of the data model (``filestore.model``).

attrs' mypy plugin understands only named functions as converters, hence one
small function per id field; each names its field in the error it raises.
Decoding helpers prefix errors with the field path (``tenant_ctx.env``).
``DocumentCodec`` gives the model classes their one copy of ``to_json``,
``from_json``, ``to_cbor`` and ``from_cbor``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar

import attrs
import cbor2

from filestore import serdejson, strictcbor
from filestore.errors import InvalidInputError
from filestore.ids import EnvId, FlowId, PackId, TeamId, TenantId, UserId

U32_MAX: Final = 2**32 - 1
I128_MIN: Final = -(2**127)
I128_MAX: Final = 2**127 - 1

JsonDict = dict[str, Any]

_T = TypeVar("_T")
_A = TypeVar("_A", bound=attrs.AttrsInstance)


def invalid(field: str, rule: str, detail: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {detail}", field=field, rule=rule)


# -- field converters -------------------------------------------------------


def to_env(value: str) -> EnvId:
    return EnvId.parse(value, field="env")


def to_tenant(value: str) -> TenantId:
    return TenantId.parse(value, field="tenant")


def to_tenant_id(value: str) -> TenantId:
    return TenantId.parse(value, field="tenant_id")


def to_team(value: str | None) -> TeamId | None:
    return None if value is None else TeamId.parse(value, field="team")


def to_team_id(value: str | None) -> TeamId | None:
    return None if value is None else TeamId.parse(value, field="team_id")


def to_user(value: str | None) -> UserId | None:
    return None if value is None else UserId.parse(value, field="user")


def to_user_id(value: str | None) -> UserId | None:
    return None if value is None else UserId.parse(value, field="user_id")


def to_actor_id(value: str) -> UserId:
    return UserId.parse(value, field="actor_id")


def to_flow_id(value: str) -> FlowId:
    return FlowId.parse(value, field="flow_id")


def to_pack_id(value: str | None) -> PackId | None:
    return None if value is None else PackId.parse(value, field="pack_id")


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable, picklable string map (``TenantCtx.attributes``).

    Its keys iterate sorted, as serde's ``BTreeMap`` emits them, whatever
    order they were given in: code point order, which for valid Unicode (a
    lone surrogate is refused) is the byte order of their UTF-8.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = dict(sorted(items.items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return dict(self._items) == other if isinstance(other, Mapping) else NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, str]]]:
        return FrozenMap, (self._items,)


def to_attributes(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if value is None:
        return FrozenMap({})
    if not isinstance(value, Mapping):
        raise invalid("attributes", "a map of strings", f"must be a map, not {type(value).__name__}")
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise invalid("attributes", "a map of strings", "keys and values must be strings")
        check_text(name, "attributes")
        check_text(item, "attributes")
    return FrozenMap(value)


def is_text(value: object) -> bool:
    """Whether ``check_text`` would take ``value`` (a ``str`` that encodes as UTF-8), without raising."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise invalid(field, "a string", f"must be a string, not {type(value).__name__}")
    if not value.isascii():
        # A lone surrogate (say from a JSON "\ud800" escape) is a str no UTF-8
        # writer can encode: serde_json refuses it, so do we, before it is stored.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(
                field, "valid Unicode text", "holds a lone surrogate, which is not valid text"
            ) from None


def optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_text(value, attribute.name)


def required_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_text(value, attribute.name)


def check_integer(value: object, field: str, low: int, high: int) -> int:
    # bool is an int subclass; serde would refuse true/false for an integer.
    if not isinstance(value, int) or isinstance(value, bool):
        kind = "-0 (a float to serde)" if isinstance(value, serdejson.NegativeZero) else type(value).__name__
        raise invalid(field, "an integer", f"must be an integer, not {kind}")
    if not low <= value <= high:
        raise invalid(field, f"between {low} and {high}", f"{value} is outside {low}..{high}")
    return value


def u32(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_integer(value, attribute.name, 0, U32_MAX)


def i128(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_integer(value, attribute.name, I128_MIN, I128_MAX)


def instance_of(kind: type) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, kind):
            raise invalid(
                attribute.name, kind.__name__, f"must be a {kind.__name__}, not {type(value).__name__}"
            )

    return check


def optional_instance_of(kind: type) -> Any:
    check = instance_of(kind)

    def optional(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check(instance, attribute, value)

    return optional


# -- building validated objects ---------------------------------------------


def slot_builder(kind: type[_A], *, first: tuple[str, ...] = ()) -> Callable[..., _A]:
    """A function taking every attrs field of ``kind`` and returning the instance, as is.

    It takes the fields named in ``first`` first, then the others in
    declaration order.

    For a decoder that has already checked every value by the rules the
    class's converters and validators apply (and converted them): it fills
    the slots of the frozen class without running those checks a second time.

    How: a frozen class's ``__setattr__`` raises, so attrs' ``__init__`` sets
    each slot through ``object.__setattr__``, a call costing about four times
    a plain attribute store, which CPython specialises to a direct slot write
    for a class with the default ``__setattr__``. The function therefore
    fills an instance of a private subclass that adds nothing but those
    defaults, then makes it a ``kind`` by ``__class__`` assignment (allowed
    because the layouts are the same: the subclass adds no slot). The result
    is an ordinary instance of ``kind``, as ``__init__`` would leave it.
    """
    declared = [field.name for field in attrs.fields(kind)]
    if not set(first) <= set(declared):
        raise ValueError(f"{kind.__name__} has no field {sorted(set(first) - set(declared))}")
    names = [*first, *(name for name in declared if name not in first)]
    filler = type(
        f"_{kind.__name__}Filler",
        (kind,),
        {
            "__slots__": (),
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,  # with __setattr__: both decide the setattr slot
            "__module__": kind.__module__,
        },
    )
    lines = [f"def build({', '.join(names)}):", "    self = new(filler)"]
    lines += [f"    self.{name} = {name}" for name in names]
    lines += ["    self.__class__ = kind", "    return self"]
    namespace: dict[str, Any] = {"new": object.__new__, "filler": filler, "kind": kind}
    exec("\n".join(lines), namespace)  # noqa: S102 -- built from the class's own field names
    build: Callable[..., _A] = namespace["build"]
    build.__qualname__ = f"slot_builder.<{kind.__name__}>"
    return build


# -- decoding helpers -------------------------------------------------------


def as_mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(where or "document", "an object", f"must be an object, not {type(value).__name__}")
    return value


def struct_fields(
    value: object, where: str, fields: tuple[str, ...], defaulted: Collection[str] = ()
) -> Mapping[str, Any]:
    """A struct's fields by name, from an object or, as serde also takes a struct, an array.

    An array gives the fields in declaration order (``fields``); it may stop
    early only where every field left out has ``#[serde(default)]``
    (``defaulted``), and may not run past the last field.
    """
    if not isinstance(value, list):
        return as_mapping(value, where)
    if len(value) > len(fields) or any(name not in defaulted for name in fields[len(value) :]):
        raise invalid(
            where or "document",
            f"{len(fields)} fields",
            f"an array of {len(value)} elements, where the struct has {len(fields)} fields",
        )
    return dict(zip(fields, value, strict=False))


def required_field(doc: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in doc or doc[name] is None:
        raise invalid(field_path(where, name), "required", "missing required field")
    return doc[name]


def field_path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def decoding(where: str, build: Callable[..., _T], *args: Any) -> _T:
    """``build(*args)``, prefixing the field path ``where`` to any error it raises."""
    # Positional arguments only: passing keywords through would copy them twice on every decode.
    try:
        return build(*args)
    except InvalidInputError as error:
        if not where:
            raise
        field = field_path(where, error.field)
        raise InvalidInputError(f"{where}.{error.message}", field=field, rule=error.rule) from None


def load_json(text: str | bytes | Mapping[str, Any], what: str) -> Any:
    """The JSON value in ``text`` (a dict is taken as already parsed); ``InvalidInputError`` if invalid."""
    # Text first: the Mapping check is an ABC's, slower than a tuple of types.
    if not isinstance(text, (str, bytes, bytearray)):
        if isinstance(text, Mapping):
            return text
        raise invalid(what, "JSON text", f"expected JSON text or a dict, not {type(text).__name__}")
    try:
        return serdejson.loads(text)
    except (ValueError, RecursionError) as error:
        raise invalid(what, "valid JSON", f"not valid JSON: {error}") from None


def load_cbor(blob: bytes, what: str) -> Any:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise invalid(what, "CBOR bytes", f"expected CBOR bytes, not {type(blob).__name__}")
    try:
        return strictcbor.loads(blob)
    except (cbor2.CBORDecodeError, RecursionError) as error:
        raise invalid(what, "valid CBOR", f"not valid CBOR: {error}") from None


def dump_json(doc: JsonDict) -> str:
    return serdejson.dumps(doc)


class DocumentCodec:
    """JSON and CBOR for a model class, in serde's shape, through its ``to_dict``/``from_dict``.

    A subclass implements those two and names its document in ``document``
    (what a parse error is reported under: ``session``, ``cursor``).
    """

    # The model classes are slotted attrs classes; a base with a __dict__ would undo that.
    __slots__ = ()

    document: ClassVar[str]

    def to_dict(self) -> JsonDict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, doc: object) -> Self:
        raise NotImplementedError

    def _encodable(self) -> JsonDict:
        """``to_dict``'s object for the encoders: the same, but ids may stay their ``str`` subclass.

        cbor2 and json write a ``str`` subclass as the plain text, so the
        bytes are the same; a class overrides this to skip the copies
        ``to_dict`` makes of its ids.
        """
        return self.to_dict()

    def to_json(self) -> str:
        """serde_json's compact text."""
        return dump_json(self._encodable())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Self:
        """Parse serde's JSON (text, bytes or an already-parsed dict); ``InvalidInputError`` if invalid."""
        return cls.from_dict(load_json(text, cls.document))

    def to_cbor(self) -> bytes:
        """The same document as CBOR (what the file store keeps)."""
        return strictcbor.dumps(self._encodable())

    @classmethod
    def from_cbor(cls, blob: bytes) -> Self:
        """Parse the CBOR ``to_cbor`` writes; ``InvalidInputError`` if it is not a valid document."""
        return cls.from_dict(load_cbor(blob, cls.document))
