"""Typed, validated configuration for tasks and models, backed by msgspec.

A class deriving from `Configurable` declares its fields as annotated class attributes.
Construction validates every field (types, bounds, unknown names) through a msgspec
struct built once per class, and `dump()`/`from_dict()` round-trip through JSON.
"""

from __future__ import annotations

import copyreg
import importlib
import inspect
import re
import typing
import urllib.parse
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import msgspec

from imagetask.errors import ConfigError

if typing.TYPE_CHECKING:
    from typing_extensions import Self, dataclass_transform
else:
    from typing import dataclass_transform

__all__ = [
    "Configurable",
    "RuntimeParameter",
    "Secret",
    "Url",
    "canonical_type_info",
    "load_object",
    "publish",
    "redact_url",
]

T = TypeVar("T")


class _Marker:
    """The mark of `RuntimeParameter`, `Secret` or `Url` in a field's annotation; equal to
    its copies (a class pickled by value carries copies in its annotations)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Marker) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


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
_MOVED = {
    "imagetask.generation": "imagetask.task",
    "imagetask.prompt_template": "imagetask.task",
    "imagetask.models.base": "imagetask.models",
    "imagetask.models.placeholder": "imagetask.models",
    "imagetask.models.openai_images": "imagetask.models",
    "imagetask.models.hf_inference": "imagetask.models",
    "imagetask.models.openai_batch": "imagetask.models",
}
"""The modules imagetask's classes were named by in dumps written before they moved, and
the module that names them now: those dumps load, and a run they describe resumes."""
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


_META_OPTIONS = tuple(name for name in dir(msgspec.Meta) if not name.startswith("_"))
"""The constraints and annotations a `msgspec.Meta` holds (each `None` when not set)."""


def _meta(options: dict[str, Any]) -> msgspec.Meta:
    return msgspec.Meta(**options)


def _reduce_meta(meta: msgspec.Meta) -> tuple[Any, tuple[Any, ...]]:
    options = {name: getattr(meta, name) for name in _META_OPTIONS}
    return _meta, ({name: value for name, value in options.items() if value is not None},)


# A class defined in a script goes to other processes by value (cloudpickle for Ray, dill
# for `datasets`), with its `msgspec.field(...)` defaults and the `msgspec.Meta`
# constraints of its fields (in its annotations and its msgspec struct).
copyreg.pickle(type(msgspec.field()), _reduce_field)
copyreg.pickle(msgspec.Meta, _reduce_meta)


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


@dataclass(frozen=True)
class _Schema:
    """What the annotations of a `Configurable` class declare: the msgspec struct that
    validates its fields, their names, and those marked runtime, secret and URL."""

    struct: type[msgspec.Struct]
    fields: tuple[str, ...]
    runtime: frozenset[str]
    secret: frozenset[str]
    url: frozenset[str]

    @classmethod
    def of(cls, owner: type) -> _Schema:
        hints = typing.get_type_hints(owner, include_extras=True)
        fields: list[tuple[str, Any, Any]] = []
        runtime, secret, url = set(), set(), set()
        for name, hint in hints.items():
            if name.startswith("_") or typing.get_origin(hint) is ClassVar:
                continue
            default = getattr(owner, name, msgspec.NODEFAULT)
            if isinstance(default, property):
                continue
            fields.append((name, _struct_type(hint), default))
            if _RUNTIME in _markers(hint):
                runtime.add(name)
            if _SECRET in _markers(hint):
                secret.add(name)
            if _URL in _markers(hint):
                url.add(name)
        struct = msgspec.defstruct(
            f"{owner.__name__}Fields", fields, kw_only=True, forbid_unknown_fields=True
        )
        names = tuple(name for name, _, _ in fields)
        return cls(struct, names, frozenset(runtime), frozenset(secret), frozenset(url))


_SCHEMAS: weakref.WeakKeyDictionary[type, _Schema] = weakref.WeakKeyDictionary()


class _FromSchema(Generic[T]):
    """A class attribute of a `Configurable` class read from its `_Schema`, made on first
    use and kept out of the class's own namespace: a class defined in a script goes to
    other processes by value (Ray, `datasets`) with only what its body defined, and its
    schema is made again there."""

    def __init__(self, read: Callable[[_Schema], T]) -> None:
        self.read = read

    def __get__(self, instance: object, owner: type) -> T:
        schema = _SCHEMAS.get(owner)
        if schema is None:
            schema = _SCHEMAS[owner] = _Schema.of(owner)
        return self.read(schema)


@dataclass_transform(kw_only_default=True, field_specifiers=(msgspec.field,))
class Configurable:
    """Base of every configurable object: fields from annotations, validated by msgspec."""

    __struct__ = _FromSchema(lambda schema: schema.struct)
    __fields__ = _FromSchema(lambda schema: schema.fields)
    __runtime__ = _FromSchema(lambda schema: schema.runtime)
    __secret__ = _FromSchema(lambda schema: schema.secret)
    __url__ = _FromSchema(lambda schema: schema.url)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The class's own annotations, evaluated here where their names resolve (they are
        # text under `from __future__ import annotations`, which another process that
        # gets the class by value could not resolve).
        own = inspect.get_annotations(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        cls.__annotations__ = {name: hints.get(name, hint) for name, hint in own.items()}
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


def publish(module: str, *classes: type[Configurable]) -> None:
    """Names `classes` by `module`, the public module that exports them, in their dumps'
    `type_info`, their reprs and their pickles, wherever in the package they are defined."""
    for cls in classes:
        cls.__module__ = module
        _REGISTRY[f"{module}.{cls.__qualname__}"] = cls


def canonical_type_info(dump: Any) -> Any:
    """`dump` (a `dump()` or part of one) with every `type_info` naming imagetask's classes
    by the module that names them now."""
    if isinstance(dump, list):
        return [canonical_type_info(value) for value in dump]
    if not isinstance(dump, dict):
        return dump
    canonical = {name: canonical_type_info(value) for name, value in dump.items()}
    info = dump.get("type_info")
    if isinstance(info, dict) and isinstance(info.get("module"), str):
        canonical["type_info"] = {**info, "module": _MOVED.get(info["module"], info["module"])}
    return canonical


def _import_type(type_info: Any, allow: Iterable[type]) -> Any:
    """The class a dump's `type_info` names: one of imagetask's own, a `Configurable`
    subclass the program has defined, or one of `allow`; never any other importable name."""
    if type_info is None:
        return None
    module = type_info.get("module") if isinstance(type_info, dict) else None
    name = type_info.get("name") if isinstance(type_info, dict) else None
    if not (isinstance(module, str) and isinstance(name, str)):
        raise ConfigError("cannot load `type_info`: expected {'module': str, 'name': str}")
    module = _MOVED.get(module, module)
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
