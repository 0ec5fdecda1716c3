"""How values and errors cross the durability boundary: as JSON bytes.

A step's result is encoded when it completes and decoded on every replay, so the decoded
value must be what the step returned. ``JsonCodec`` (the default) is built on msgspec and
handles JSON values, dataclasses, msgspec Structs, datetimes, UUIDs, Decimals and enums
natively, plus pydantic v2 models when pydantic is in use. Decoding with the step's
return annotation (``decode(data, MyDataclass)``) gives back a ``MyDataclass``; decoding
with ``Any`` gives plain JSON values (dicts, lists, strings, numbers, booleans, None).

Errors are stored as a JSON record::

    {"type": "<module>.<qualname>", "message": str(exc), "args": [...] | null,
     "traceback": "<formatted traceback>"}

and re-created on decode when that is safe and faithful; otherwise they come back as a
``RemoteError``. Nothing is ever unpickled and no code runs beyond importing a module by
its name.
"""

from __future__ import annotations

import importlib
import sys
import traceback as tb_module
from typing import Any, Final, Protocol

import msgspec

__all__ = [
    "Codec",
    "DecodeError",
    "EncodeError",
    "JsonCodec",
    "RemoteError",
    "remote_traceback",
]

_SUPPORTED: Final = (
    "JSON values (dict with str keys, list, tuple, str, int, float, bool, None), "
    "dataclasses, msgspec Structs, datetime/date/time/timedelta, UUID, Decimal, enums, "
    "bytes, sets and pydantic v2 models"
)

#: Attribute set on re-created exceptions: the traceback text of the original failure.
TRACEBACK_ATTR: Final = "__troth_traceback__"


class EncodeError(TypeError):
    """A value cannot be stored durably; the message names its type and what is supported."""


class DecodeError(ValueError):
    """Stored bytes are not valid JSON or do not match the requested type."""


class RemoteError(Exception):
    """A stored failure whose exception type cannot be faithfully re-created here.

    ``type_name`` is the original ``module.qualname``, ``message`` its ``str()`` and
    ``traceback`` the formatted traceback recorded where it was raised.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.__troth_traceback__ = traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def remote_traceback(exc: BaseException) -> str | None:
    """The traceback text recorded where ``exc`` was originally raised, if it was decoded."""
    value = getattr(exc, TRACEBACK_ATTR, None)
    return value if isinstance(value, str) else None


class Codec(Protocol):
    """Turns step results and failures into bytes and back."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes, type: Any = Any) -> Any: ...

    def encode_error(self, exc: BaseException) -> bytes: ...

    def decode_error(self, data: bytes) -> BaseException: ...


class _ErrorRecord(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    message: str = ""
    args: list[Any] | None = None
    traceback: str = ""


def _pydantic_base_model() -> type[Any] | None:
    """pydantic v2's ``BaseModel`` if pydantic has been imported, without importing it.

    A value (or a type) can only be a pydantic model if pydantic is already imported, so
    looking in ``sys.modules`` keeps pydantic optional and costs nothing when unused.
    """
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None)
    if isinstance(base, type) and hasattr(base, "model_dump"):
        return base
    return None


def _is_pydantic_model_type(tp: Any) -> bool:
    base = _pydantic_base_model()
    return base is not None and isinstance(tp, type) and issubclass(tp, base)


def _type_name(tp: type[Any]) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _enc_hook(value: Any) -> Any:
    base = _pydantic_base_model()
    if base is not None and isinstance(value, base):
        return value.model_dump(mode="json")
    raise EncodeError(
        f"cannot encode a value of type {_type_name(type(value))} ({value!r:.80}): "
        f"troth stores {_SUPPORTED}. Convert it to one of these, or pass a custom Codec."
    )


def _dec_hook(tp: Any, obj: Any) -> Any:
    if _is_pydantic_model_type(tp):
        return tp.model_validate(obj)
    raise TypeError(f"troth cannot decode into {tp!r}; it decodes {_SUPPORTED}")


class JsonCodec:
    """The default codec: JSON via msgspec, with optional pydantic v2 support."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self._any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}

    # -- values ---------------------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """JSON bytes for ``value``; raise ``EncodeError`` if it cannot be stored."""
        try:
            return self._encoder.encode(value)
        except EncodeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            # msgspec's own refusals, e.g. dicts with unsupported keys.
            raise EncodeError(
                f"cannot encode a value of type {_type_name(type(value))}: {exc}. "
                f"troth stores {_SUPPORTED}."
            ) from exc

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Decode ``data`` as ``type`` (a return annotation); ``Any`` gives plain JSON."""
        try:
            if type is Any:
                return self._any_decoder.decode(data)
            if _is_pydantic_model_type(type):
                return type.model_validate_json(data)
            return self._decoder_for(type).decode(data)
        except (msgspec.DecodeError, ValueError) as exc:
            # pydantic.ValidationError is a ValueError.
            raise DecodeError(f"cannot decode stored value as {type!r}: {exc}") from exc

    def _decoder_for(self, tp: Any) -> msgspec.json.Decoder[Any]:
        try:
            return self._decoders[tp]
        except KeyError:
            pass
        except TypeError:  # unhashable annotation: build one each time
            return msgspec.json.Decoder(tp, dec_hook=_dec_hook)
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(tp, dec_hook=_dec_hook)
        self._decoders[tp] = decoder
        return decoder

    # -- errors ---------------------------------------------------------------------------

    def encode_error(self, exc: BaseException) -> bytes:
        """A JSON record of ``exc``: type, message, args (if JSON-encodable), traceback."""
        if isinstance(exc, RemoteError):
            # Re-raised unknown failure: keep the original identity, not "RemoteError".
            type_name, message, args = exc.type_name, exc.message, None
            traceback = exc.traceback
        else:
            type_name = _type_name(type(exc))
            message = _safe_str(exc)
            args = self._encoded_args(exc)
            traceback = "".join(tb_module.format_exception(exc))
            remote = remote_traceback(exc)
            if remote:
                traceback = f"{remote}\nRe-raised from a stored failure:\n{traceback}"
        record = {"type": type_name, "message": message, "args": args, "traceback": traceback}
        return self._encoder.encode(record)

    def _encoded_args(self, exc: BaseException) -> msgspec.Raw | None:
        try:
            return msgspec.Raw(self._encoder.encode(list(exc.args)))
        except (TypeError, ValueError, OverflowError):
            return None

    def decode_error(self, data: bytes) -> BaseException:
        """Re-create the stored exception, or a ``RemoteError`` when that is not faithful.

        The original type is used only if it resolves (from ``sys.modules`` or a plain
        import of its module) to an ``Exception`` subclass, constructing it from the
        stored args succeeds and the result has the stored message.
        """
        try:
            record = msgspec.json.decode(data, type=_ErrorRecord)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"stored error is not a troth error record: {exc}") from exc
        rebuilt = _rebuild(record)
        if rebuilt is None:
            return RemoteError(record.type, record.message, record.traceback)
        try:
            setattr(rebuilt, TRACEBACK_ATTR, record.traceback)
        except (AttributeError, TypeError):
            return RemoteError(record.type, record.message, record.traceback)
        return rebuilt


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<str() of {type(exc).__qualname__} failed>"


def _rebuild(record: _ErrorRecord) -> Exception | None:
    if record.args is None:
        return None
    cls = _resolve_class(record.type)
    if cls is None or not issubclass(cls, Exception):
        return None
    try:
        exc = cls(*record.args)
        faithful = isinstance(exc, cls) and str(exc) == record.message
    except Exception:
        return None
    return exc if faithful else None


def _resolve_class(name: str) -> type[Any] | None:
    """The class named ``module.qualname``: the longest importable module prefix wins."""
    parts = name.split(".")
    if any(not part.isidentifier() for part in parts) or len(parts) < 2:
        return None  # e.g. "<locals>" in the qualname: not reachable by name
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # missing module, or one that fails to import
                continue
        obj: Any = module
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        return obj if isinstance(obj, type) else None
    return None
