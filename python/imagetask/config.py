"""Typed, validated configuration for tasks and models, backed by msgspec.

A class deriving from `Configurable` declares its fields as annotated class attributes.
Construction validates every field (types, bounds, unknown names) through a msgspec
struct built once per class, and `dump()`/`from_dict()` round-trip through JSON.
"""

from __future__ import annotations

import copyreg
import importlib
import re
import typing
import urllib.parse
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from imagetask.errors import ConfigError

if typing.TYPE_CHECKING:
    from typing_extensions import Self, dataclass_transform
else:
    from typing import dataclass_transform

__all__ = ["Configurable", "RuntimeParameter", "Secret", "Url", "load_object", "redact_url"]

T = TypeVar("T")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_RUNTIME = _Marker("RuntimeParameter")
_SECRET = _Marker("Secret")
_URL = _Marker("Url")

RuntimeParameter = Annotated[T, _RUNTIME]
"""Marks a field that may be set at run time with `set_runtime_parameters`."""

Secret = Annotated[T, _SECRET]
"""Marks a field that never appears in a dump, a repr or an error message."""

Url = Annotated[T, _URL]
"""Marks a URL field: the credentials it may hold (a password, the query string) never
appear in a dump, a repr or an error message (see `redact_url`)."""


def redact_url(url: str) -> str:
    """`url` with the password of its user part and its query string masked."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:{_MASK}@{host}" if ":" in user else netloc
    query = _MASK if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_REGISTRY: dict[str, type[Configurable]] = {}
"""Every `Configurable` class defined in this process, by `module.qualname`."""
_MASK = "**********"
_PATH = re.compile(r"at `\$\.([^`.\[]+)")
_AT = re.compile(r" - at `[^`]*`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def _field(default: Any, default_factory: Any, name: str | None) -> Any:
    if default_factory is not msgspec.NODEFAULT:
        return msgspec.field(default_factory=default_factory, name=name)
    if default is not msgspec.NODEFAULT:
        return msgspec.field(default=default, name=name)
    return msgspec.field(name=name)


def _reduce_field(field: Any) -> tuple[Any, tuple[Any, ...]]:
    return _field, (field.default, field.default_factory, field.name)


# A class that declares `msgspec.field(...)` defaults pickles by value (cloudpickle, as Ray
# and `datasets` send a class defined in a script to other processes).
copyreg.pickle(type(msgspec.field()), _reduce_field)


def _dump_value(value: Any) -> Any:
    dump = getattr(value, "dump", None)
    if callable(dump):
        return dump()
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        cls = type(value)
        return {"type_info": {"module": cls.__module__, "name": cls.__qualname__}}


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
    __url__: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: list[tuple[str, Any, Any]] = []
        runtime, secret, url = set(), set(), set()
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
            if _URL in _markers(hint):
                url.add(name)
        cls.__struct__ = msgspec.defstruct(
            f"{cls.__name__}Fields", fields, kw_only=True, forbid_unknown_fields=True
        )
        cls.__fields__ = tuple(name for name, _, _ in fields)
        cls.__runtime__ = frozenset(runtime)
        cls.__secret__ = frozenset(secret)
        cls.__url__ = frozenset(url)
        _REGISTRY[f"{cls.__module__}.{cls.__qualname__}"] = cls

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
        unknown = field not in self.__fields__
        hidden = unknown or field in self.__secret__ or field not in fields
        shown = "" if hidden else f" = {self._shown(field, fields[field])!r}"
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

        Secret fields are left out: they are read again from the environment on load. A
        value that has no `dump()` and is not plain data (a backend that is a plain object)
        is recorded by its class alone.
        """
        data: dict[str, Any] = {}
        for name in self.__fields__:
            if name in self.__secret__:
                continue
            data[name] = _dump_value(self._shown(name, getattr(self, name)))
        cls = type(self)
        data["type_info"] = {"module": cls.__module__, "name": cls.__qualname__}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], allow: Iterable[type] = ()) -> Self:
        """Rebuilds an object from `dump()` output (the class named by `type_info`).

        A dump is data, not code: `type_info` may name imagetask's own classes and the
        `Configurable` classes this program defines; any other class (a backend that is
        a plain object, say) loads only when it is passed in `allow`.
        """
        allow = tuple(allow)
        fields = dict(data)
        target = _import_type(fields.pop("type_info", None), allow) or cls
        if not (isinstance(target, type) and issubclass(target, cls)):
            raise ConfigError(f"{cls.__name__}.from_dict: `type_info` names {target!r}")
        for name, value in fields.items():
            if isinstance(value, dict) and "type_info" in value:
                fields[name] = load_object(value, allow)
        return target(**fields)

    def _shown(self, name: str, value: Any) -> Any:
        """A field's value as dumps, reprs and errors show it."""
        if name in self.__secret__:
            return _MASK
        if name in self.__url__ and isinstance(value, str):
            return redact_url(value)
        return value

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_MASK if name in self.__secret__ else repr(self._shown(name, value))}"
            for name, value in self._field_values().items()
        )
        return f"{type(self).__name__}({shown})"


def _import_type(type_info: Any, allow: Iterable[type]) -> Any:
    """The class a dump's `type_info` names: one of imagetask's own, a `Configurable`
    subclass the program has defined, or one of `allow`; never any other importable name."""
    if type_info is None:
        return None
    module = type_info.get("module") if isinstance(type_info, dict) else None
    name = type_info.get("name") if isinstance(type_info, dict) else None
    if not (isinstance(module, str) and isinstance(name, str)):
        raise ConfigError("cannot load `type_info`: expected {'module': str, 'name': str}")
    key = f"{module}.{name}"
    allowed = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in allow}
    if key in allowed:
        return allowed[key]
    if key not in _REGISTRY and (module == "imagetask" or module.startswith("imagetask.")):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot load `type_info` {key}: {exc}") from None
    if key not in _REGISTRY:
        raise ConfigError(
            f"cannot load `type_info` {key}: not a class of imagetask nor a Configurable class "
            "this program defines; pass it in `allow` to load it"
        )
    return _REGISTRY[key]


def load_object(data: dict[str, Any], allow: Iterable[type] = ()) -> Any:
    """Loads a dumped object from its `type_info` (see `Configurable.from_dict`)."""
    fields = dict(data)
    target = _import_type(fields.pop("type_info", None), allow)
    if target is None:
        raise ConfigError(f"cannot load {sorted(fields)}: the dump has no `type_info`")
    from_dict = getattr(target, "from_dict", None)
    if callable(from_dict):
        return from_dict({**fields, "type_info": data["type_info"]}, allow=allow)
    return target(**fields)
