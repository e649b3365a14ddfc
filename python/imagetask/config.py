"""Typed, validated configuration for tasks and models, backed by msgspec.

A class deriving from `Configurable` declares its fields as annotated class attributes.
Construction validates every field (types, bounds, unknown names) through a msgspec
struct built once per class, and `dump()`/`from_dict()` round-trip through JSON.
"""

from __future__ import annotations

import importlib
import re
import typing
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from imagetask.errors import ConfigError

if typing.TYPE_CHECKING:
    from typing_extensions import Self, dataclass_transform
else:
    from typing import dataclass_transform

__all__ = ["Configurable", "RuntimeParameter", "Secret", "load_object"]

T = TypeVar("T")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_RUNTIME = _Marker("RuntimeParameter")
_SECRET = _Marker("Secret")

RuntimeParameter = Annotated[T, _RUNTIME]
"""Marks a field that may be set at run time with `set_runtime_parameters`."""

Secret = Annotated[T, _SECRET]
"""Marks a field that never appears in a dump, a repr or an error message."""

_MASK = "**********"
_PATH = re.compile(r"at `\$\.([^`.\[]+)")
_AT = re.compile(r" - at `[^`]*`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def _markers(hint: Any) -> tuple[Any, ...]:
    return tuple(getattr(hint, "__metadata__", ()))


def _struct_type(hint: Any) -> Any:
    """The type msgspec validates a field against (protocols are checked by the class)."""
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
    if getattr(base, "_is_protocol", False):
        return Any
    return hint


@dataclass_transform(kw_only_default=True, field_specifiers=(msgspec.field,))
class Configurable:
    """Base of every configurable object: fields from annotations, validated by msgspec."""

    __struct__: ClassVar[type[msgspec.Struct]]
    __fields__: ClassVar[tuple[str, ...]]
    __runtime__: ClassVar[frozenset[str]]
    __secret__: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: list[tuple[str, Any, Any]] = []
        runtime, secret = set(), set()
        for name, hint in hints.items():
            if name.startswith("_") or typing.get_origin(hint) is ClassVar:
                continue
            default = getattr(cls, name, msgspec.NODEFAULT)
            if isinstance(default, property):
                continue
            fields.append((name, _struct_type(hint), default))
            if _RUNTIME in _markers(hint):
                runtime.add(name)
            if _SECRET in _markers(hint):
                secret.add(name)
        cls.__struct__ = msgspec.defstruct(
            f"{cls.__name__}Fields", fields, kw_only=True, forbid_unknown_fields=True
        )
        cls.__fields__ = tuple(name for name, _, _ in fields)
        cls.__runtime__ = frozenset(runtime)
        cls.__secret__ = frozenset(secret)

    def __init__(self, **fields: Any) -> None:
        self._configure(fields)

    def _configure(self, fields: dict[str, Any]) -> None:
        try:
            config = msgspec.convert(fields, self.__struct__, strict=True)
        except msgspec.ValidationError as exc:
            raise self._config_error(str(exc), fields) from None
        for name in self.__fields__:
            object.__setattr__(self, name, getattr(config, name))
        self.__post_init__()

    def _config_error(self, message: str, fields: dict[str, Any]) -> ConfigError:
        found = _UNKNOWN.search(message) or _PATH.search(message)
        cls = type(self).__name__
        if found is None:
            return ConfigError(f"{cls}: {message}")
        field = found.group(1)
        hidden = field in self.__secret__ or field not in fields
        shown = "" if hidden else f" = {fields[field]!r}"
        message = _AT.sub("", message)
        return ConfigError(f"{cls}: bad field `{field}`{shown}: {message}")

    def __post_init__(self) -> None:
        """Checks that span several fields; runs after every (re)configuration."""

    def _field_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__fields__}

    @property
    def runtime_parameters_names(self) -> dict[str, Any]:
        """The fields that may be set at run time (`True`: optional), nested for models."""
        names: dict[str, Any] = {}
        for name in self.__fields__:
            value = getattr(self, name)
            if name in self.__runtime__:
                names[name] = True
            elif isinstance(value, Configurable) and value.runtime_parameters_names:
                names[name] = value.runtime_parameters_names
        return names

    def set_runtime_parameters(self, parameters: dict[str, Any]) -> None:
        """Sets runtime parameters, validated like constructor arguments."""
        own: dict[str, Any] = {}
        for name, value in parameters.items():
            nested = getattr(self, name, None) if name in self.__fields__ else None
            if isinstance(nested, Configurable) and isinstance(value, dict):
                nested.set_runtime_parameters(value)
            elif name in self.__runtime__:
                own[name] = value
            else:
                allowed = ", ".join(sorted(self.runtime_parameters_names)) or "none"
                raise ConfigError(
                    f"{type(self).__name__}: `{name}` is not a runtime parameter "
                    f"(runtime parameters: {allowed})"
                )
        if own:
            self._configure({**self._field_values(), **own})

    def dump(self) -> dict[str, Any]:
        """The fields as JSON-compatible data, with `type_info` to load them back.

        Secret fields are left out: they are read again from the environment on load.
        """
        data: dict[str, Any] = {}
        for name in self.__fields__:
            if name in self.__secret__:
                continue
            value = getattr(self, name)
            dump = getattr(value, "dump", None)
            data[name] = dump() if callable(dump) else msgspec.to_builtins(value)
        cls = type(self)
        data["type_info"] = {"module": cls.__module__, "name": cls.__qualname__}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuilds an object from `dump()` output (the class named by `type_info`)."""
        fields = dict(data)
        target = _import_type(fields.pop("type_info", None)) or cls
        if not (isinstance(target, type) and issubclass(target, cls)):
            raise ConfigError(f"{cls.__name__}.from_dict: `type_info` names {target!r}")
        for name, value in fields.items():
            if isinstance(value, dict) and "type_info" in value:
                fields[name] = load_object(value)
        return target(**fields)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_MASK if name in self.__secret__ else repr(getattr(self, name))}"
            for name in self.__fields__
        )
        return f"{type(self).__name__}({shown})"


def _import_type(type_info: Any) -> Any:
    if type_info is None:
        return None
    try:
        module = importlib.import_module(type_info["module"])
        target: Any = module
        for part in type_info["name"].split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load `type_info` {type_info!r}: {exc}") from None
    return target


def load_object(data: dict[str, Any]) -> Any:
    """Loads a dumped object (ours or any class with `from_dict`) from its `type_info`."""
    fields = dict(data)
    target = _import_type(fields.get("type_info"))
    from_dict = getattr(target, "from_dict", None)
    if callable(from_dict):
        return from_dict(fields)
    fields.pop("type_info")
    return target(**fields)
