"""Command-line settings from a TOML file: one key per flag, with the flag's name.

The keys are read off the `argparse` parser itself, so a flag added to the parser
has its key at once: ``--max-per-ip`` is ``max-per-ip``, and the key of a flag
with its own ``dest`` is that dest with ``-`` for ``_`` (``--operator``, repeatable,
collects into ``operators``).  A key's TOML type follows the flag:

- ``type=int``: an integer (``true`` is not one); ``type=float``: a number;
- a flag with no type: a string; with some other ``type`` function: a string that
  the function accepts, as it would on the command line;
- ``choices``: one of them; ``store_true``: a boolean; ``append``: a list of them.

`read_config` checks every key and raises `ConfigError` on the first problem, with
one line naming the key.  `merge` lays the file under the command line: a flag
given there wins (`given_on_command_line` says which were).
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["ConfigError", "Key", "given_on_command_line", "keys_of", "merge", "read_config"]

#: Flags that are not settings: they have no key.
NOT_KEYS = frozenset({"help", "config"})


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` is one line naming the key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@attrs.frozen
class Key:
    """One setting of the file and the flag it stands for."""

    name: str
    dest: str
    kind: type  # int, float, str or bool: the TOML type of the value (of each item, for lists)
    repeated: bool = False  # an ``append`` flag: a list of values
    convert: Callable[[str], Any] | None = None  # the flag's own ``type`` function
    choices: tuple[Any, ...] | None = None


def keys_of(parser: argparse.ArgumentParser) -> dict[str, Key]:
    """Every key the parser's flags allow, by key name."""
    keys: dict[str, Key] = {}
    for action in parser._actions:
        if action.dest in NOT_KEYS or not action.option_strings:
            continue
        name = action.dest.replace("_", "-")
        choices = tuple(action.choices) if action.choices is not None else None
        if action.nargs == 0 and action.const is True:  # store_true
            keys[name] = Key(name, action.dest, bool)
            continue
        repeated = isinstance(action, argparse._AppendAction)
        kind: type = str
        convert: Callable[[str], Any] | None = None
        if action.type is int or action.type is float:
            kind = action.type
        elif callable(action.type) and action.type is not str:
            convert = action.type  # e.g. str.upper, or a parser of "host:port"
        keys[name] = Key(name, action.dest, kind, repeated, convert, choices)
    return keys


_TOML_TYPE = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _toml_type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _one(key: Key, value: object, where: str) -> Any:
    """Check and convert one value (one item of a list) of ``key``."""

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{where}: expected {expected}, not {_toml_type_name(value)}", key.name)

    if key.kind is bool:
        if not isinstance(value, bool):
            raise wrong(_TOML_TYPE[bool])
        return value
    if key.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong(_TOML_TYPE[int])
        result: Any = value
    elif key.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong(_TOML_TYPE[float])
        result = float(value)
    else:
        if not isinstance(value, str):
            raise wrong(_TOML_TYPE[str])
        result = value
        if key.convert is not None:
            try:
                result = key.convert(value)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: {exc}", key.name) from None
    if key.choices is not None and result not in key.choices:
        listed = ", ".join(repr(c) for c in key.choices)
        raise ConfigError(f"{where}: expected one of {listed}, not {result!r}", key.name)
    return result


def _value(key: Key, value: object) -> Any:
    if not key.repeated:
        return _one(key, value, key.name)
    if not isinstance(value, list):
        item = _TOML_TYPE[key.kind]
        raise ConfigError(
            f"{key.name}: expected an array of {item.split(' ', 1)[-1]}s, "
            f"not {_toml_type_name(value)}",
            key.name,
        )
    return [_one(key, item, f"{key.name}[{i}]") for i, item in enumerate(value)]


def parse_config(text: str, keys: Mapping[str, Key], source: str = "config") -> dict[str, Any]:
    """The settings in TOML ``text``, by argparse dest; raises `ConfigError`."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = keys.get(name)
        if key is None:
            shown = name if name.isprintable() else repr(name)
            raise ConfigError(f"{source}: unknown key {shown}", name)
        try:
            values[key.dest] = _value(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: key {exc}", exc.key) from None
    return values


def read_config(path: str, keys: Mapping[str, Key]) -> dict[str, Any]:
    """The settings in the TOML file at ``path``, by argparse dest; raises `ConfigError`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_config(text, keys, path)


def given_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The dests of the flags ``argv`` gives: those the file must not override."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        namespace = parser.parse_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(namespace))


def merge(
    args: argparse.Namespace, values: Mapping[str, Any], pinned: set[str]
) -> argparse.Namespace:
    """A copy of ``args`` with the file's ``values``, except where a flag was given."""
    merged = argparse.Namespace(**vars(args))
    for dest, value in values.items():
        if dest not in pinned:
            setattr(merged, dest, value)
    return merged
