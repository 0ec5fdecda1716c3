"""JsonCodec: values and errors survive the durability boundary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import socket
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from troth.sdk.codec import (
    Codec,
    DecodeError,
    EncodeError,
    JsonCodec,
    RemoteError,
    remote_traceback,
)

codec = JsonCodec()

# -- strategies -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@dataclasses.dataclass
class Point:
    x: int
    y: float


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    tags: dict[str, str]
    parent: Shape | None = None


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Job(msgspec.Struct):
    id: uuid.UUID
    when: dt.datetime
    price: Decimal
    color: Color


points = st.builds(Point, x=st.integers(), y=st.floats(allow_nan=False, allow_infinity=False))
shapes = st.recursive(
    st.builds(
        Shape,
        name=st.text(),
        points=st.lists(points, max_size=4),
        tags=st.dictionaries(st.text(), st.text(), max_size=3),
        parent=st.none(),
    ),
    lambda children: st.builds(
        Shape,
        name=st.text(),
        points=st.lists(points, max_size=2),
        tags=st.just({}),
        parent=children,
    ),
    max_leaves=4,
)
jobs = st.builds(
    Job,
    id=st.uuids(),
    when=st.datetimes(timezones=st.just(dt.UTC)),
    price=st.decimals(allow_nan=False, allow_infinity=False),
    color=st.sampled_from(Color),
)


# -- values ---------------------------------------------------------------------------------


def test_json_codec_satisfies_protocol() -> None:
    c: Codec = JsonCodec()
    assert c.decode(c.encode({"a": [1, 2]})) == {"a": [1, 2]}


@given(json_values)
def test_json_values_round_trip(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@given(json_values)
def test_typed_any_is_plain_json(value: Any) -> None:
    assert codec.decode(codec.encode(value), Any) == value


@given(shapes)
def test_dataclasses_round_trip_typed(value: Shape) -> None:
    decoded = codec.decode(codec.encode(value), Shape)
    assert type(decoded) is Shape
    assert decoded == value


@given(st.lists(shapes, max_size=3), st.dictionaries(st.text(), points, max_size=3))
def test_nested_generic_containers_round_trip(
    items: list[Shape], by_name: dict[str, Point]
) -> None:
    value = {"items": items, "by_name": by_name}
    decoded = codec.decode(codec.encode(value), dict[str, Any])
    assert codec.decode(codec.encode(items), list[Shape]) == items
    assert codec.decode(codec.encode(by_name), dict[str, Point]) == by_name
    assert decoded["items"] == [dataclasses.asdict(s) for s in items]


@given(jobs)
def test_structs_and_rich_scalars_round_trip(job: Job) -> None:
    decoded = codec.decode(codec.encode(job), Job)
    assert decoded == job
    assert isinstance(decoded.when, dt.datetime)
    assert isinstance(decoded.price, Decimal)


def test_dataclass_untyped_decodes_to_plain_dict() -> None:
    assert codec.decode(codec.encode(Point(1, 2.5))) == {"x": 1, "y": 2.5}


def test_typed_decode_of_scalars_and_collections() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    assert codec.decode(codec.encode(when), dt.datetime) == when
    assert codec.decode(codec.encode(Color.RED), Color) is Color.RED
    assert codec.decode(codec.encode((1, "a")), tuple[int, str]) == (1, "a")
    assert codec.decode(codec.encode({3, 1}), set[int]) == {1, 3}
    assert codec.decode(codec.encode(b"\x00\xff"), bytes) == b"\x00\xff"
    assert codec.decode(codec.encode(None), None) is None
    assert codec.decode(codec.encode(3), float) == 3.0
    assert codec.decode(codec.encode(Point(1, 2.0)), Point | None) == Point(1, 2.0)
    # Untyped, the JSON shape comes back.
    assert codec.decode(codec.encode((1, "a"))) == [1, "a"]
    assert codec.decode(codec.encode(when)) == "2024-05-01T12:30:00Z"


def test_decode_mismatch_raises_decode_error_naming_type() -> None:
    with pytest.raises(DecodeError, match="Point"):
        codec.decode(b'{"x": "not an int", "y": 1.0}', Point)
    with pytest.raises(DecodeError):
        codec.decode(b"{not json")
    assert issubclass(DecodeError, ValueError)


def test_decode_into_unsupported_class_raises_decode_error() -> None:
    class Opaque:
        pass

    with pytest.raises(DecodeError, match="Opaque"):
        codec.decode(b"{}", Opaque)


# -- unencodable values ---------------------------------------------------------------------


def test_lambda_is_rejected_with_clear_message() -> None:
    with pytest.raises(EncodeError, match=r"builtins\.function") as info:
        codec.encode(lambda: None)
    message = str(info.value)
    assert "dataclasses" in message and "pydantic" in message
    assert isinstance(info.value, TypeError)


def test_socket_is_rejected() -> None:
    with socket.socket() as sock, pytest.raises(EncodeError, match=r"socket\.socket"):
        codec.encode({"conn": sock})


def test_set_of_objects_is_rejected() -> None:
    with pytest.raises(EncodeError, match=r"builtins\.object"):
        codec.encode({object()})


def test_unencodable_field_inside_dataclass_is_rejected() -> None:
    @dataclasses.dataclass
    class Holder:
        thing: Any

    with pytest.raises(EncodeError, match=r"builtins\.object"):
        codec.encode(Holder(object()))


def test_unsupported_dict_keys_are_rejected() -> None:
    with pytest.raises(EncodeError, match="troth stores"):
        codec.encode({(1, 2): "tuple key"})


# -- pydantic -------------------------------------------------------------------------------

try:
    import pydantic
except ImportError:  # pragma: no cover - pydantic is optional at runtime
    pydantic = None  # type: ignore[assignment]

needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")

if pydantic is not None:

    class Address(pydantic.BaseModel):
        city: str
        zip: str | None = None

    class User(pydantic.BaseModel):
        name: str
        joined: dt.datetime
        address: Address
        scores: list[int] = pydantic.Field(default_factory=list)


@needs_pydantic
def test_pydantic_model_round_trip() -> None:
    user = User(
        name="ada",
        joined=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        address=Address(city="London"),
        scores=[1, 2],
    )
    data = codec.encode(user)
    decoded = codec.decode(data, User)
    assert type(decoded) is User
    assert decoded == user
    assert codec.decode(data)["address"] == {"city": "London", "zip": None}


@needs_pydantic
def test_pydantic_models_nested_in_containers_and_dataclasses() -> None:
    @dataclasses.dataclass
    class Envelope:
        users: list[Address]

    env = Envelope(users=[Address(city="Paris"), Address(city="Rome", zip="00100")])
    assert codec.decode(codec.encode(env), Envelope) == env
    assert codec.decode(codec.encode(env.users), list[Address]) == env.users


@needs_pydantic
def test_pydantic_validation_failure_is_decode_error() -> None:
    with pytest.raises(DecodeError, match="User"):
        codec.decode(b'{"name": "x"}', User)
    with pytest.raises(DecodeError):
        codec.decode(b'[{"zip": 1}]', list[Address])


# -- errors ---------------------------------------------------------------------------------


class PaymentDeclined(Exception):
    """A custom, importable, normally-constructed exception."""


class WithCode(Exception):
    """Non-standard __init__: args do not reconstruct it."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class Prefixing(Exception):
    """Constructible from its args, but the result differs from the original."""

    def __init__(self, what: str) -> None:
        super().__init__(f"bad {what}")


class Interrupted(BaseException):
    """Not an Exception: must never be re-created."""


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _record(exc: BaseException) -> dict[str, Any]:
    record = msgspec.json.decode(codec.encode_error(exc))
    assert isinstance(record, dict)
    return record


def test_error_record_shape() -> None:
    record = _record(_raised(ValueError("bad input", 3)))
    assert record["type"] == "builtins.ValueError"
    assert record["message"] == "('bad input', 3)"
    assert record["args"] == ["bad input", 3]
    assert "Traceback (most recent call last)" in record["traceback"]
    assert "_raised" in record["traceback"]
    assert set(record) == {"type", "message", "args", "traceback"}


def test_unencodable_args_are_stored_as_null() -> None:
    record = _record(ValueError(object()))
    assert record["args"] is None
    assert record["message"].startswith("<object object")


@pytest.mark.parametrize(
    "exc",
    [ValueError("nope"), KeyError("missing"), RuntimeError(), PaymentDeclined("card 42")],
)
def test_error_round_trip_recreates_type(exc: Exception) -> None:
    original = _raised(exc)
    decoded = codec.decode_error(codec.encode_error(original))
    assert type(decoded) is type(exc)
    assert decoded.args == exc.args
    assert str(decoded) == str(exc)
    tb = remote_traceback(decoded)
    assert tb is not None and "_raised" in tb
    assert getattr(decoded, "__troth_traceback__") == tb  # noqa: B009


def test_non_standard_init_becomes_remote_error() -> None:
    decoded = codec.decode_error(codec.encode_error(_raised(WithCode(404, "no such user"))))
    assert isinstance(decoded, RemoteError)
    assert decoded.type_name == f"{__name__}.WithCode"
    assert decoded.message == "404: no such user"
    assert str(decoded) == f"{__name__}.WithCode: 404: no such user"
    assert "_raised" in decoded.traceback
    assert remote_traceback(decoded) == decoded.traceback


def test_unfaithful_reconstruction_becomes_remote_error() -> None:
    decoded = codec.decode_error(codec.encode_error(Prefixing("thing")))
    assert isinstance(decoded, RemoteError)
    assert decoded.message == "bad thing"


def test_local_class_is_not_importable_becomes_remote_error() -> None:
    class LocalError(Exception):
        pass

    decoded = codec.decode_error(codec.encode_error(_raised(LocalError("x"))))
    assert isinstance(decoded, RemoteError)
    assert "<locals>.LocalError" in decoded.type_name
    assert decoded.message == "x"


@pytest.mark.parametrize(
    "type_name",
    [
        "no_such_module_for_troth_tests.SomeError",
        "builtins.NoSuchError",
        f"{__name__}.PaymentDeclined.nested",
        "nodots",
        "",
    ],
)
def test_unresolvable_type_becomes_remote_error(type_name: str) -> None:
    data = msgspec.json.encode(
        {"type": type_name, "message": "boom", "args": ["boom"], "traceback": "tb"}
    )
    decoded = codec.decode_error(data)
    assert isinstance(decoded, RemoteError)
    assert (decoded.type_name, decoded.message, decoded.traceback) == (type_name, "boom", "tb")
    assert "no_such_module_for_troth_tests" not in sys.modules


def test_non_exception_types_are_never_recreated() -> None:
    for exc in (Interrupted("stop"), KeyboardInterrupt()):
        decoded = codec.decode_error(codec.encode_error(exc))
        assert isinstance(decoded, RemoteError)
    # A non-exception class (or a function) named in the record is refused too.
    for name in ("builtins.dict", "os.getcwd"):
        data = msgspec.json.encode({"type": name, "message": "", "args": [], "traceback": ""})
        assert isinstance(codec.decode_error(data), RemoteError)


def test_module_is_imported_by_name_when_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "troth_codec_probe_module"
    (tmp_path / f"{name}.py").write_text("class ProbeError(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert name not in sys.modules
    data = msgspec.json.encode(
        {"type": f"{name}.ProbeError", "message": "probe", "args": ["probe"], "traceback": ""}
    )
    try:
        decoded = codec.decode_error(data)
        assert type(decoded) is sys.modules[name].ProbeError
        assert decoded.args == ("probe",)
    finally:
        sys.modules.pop(name, None)


def test_remote_error_round_trip_keeps_original_identity() -> None:
    remote = RemoteError("elsewhere.Failure", "it broke", "Traceback: far away")
    decoded = codec.decode_error(codec.encode_error(_raised(remote)))
    assert isinstance(decoded, RemoteError)
    assert (decoded.type_name, decoded.message, decoded.traceback) == (
        "elsewhere.Failure",
        "it broke",
        "Traceback: far away",
    )


def test_reraised_decoded_error_keeps_remote_traceback() -> None:
    first = codec.decode_error(codec.encode_error(_raised(PaymentDeclined("card"))))
    again = codec.decode_error(codec.encode_error(_raised(first)))
    assert type(again) is PaymentDeclined
    tb = remote_traceback(again)
    assert tb is not None and "Re-raised from a stored failure" in tb


def test_remote_error_str_without_message() -> None:
    assert str(RemoteError("pkg.Empty", "")) == "pkg.Empty"


def test_garbage_error_record_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        codec.decode_error(b'{"message": "no type"}')
    with pytest.raises(DecodeError):
        codec.decode_error(b"not json")
