"""The TOML config file: every flag a key, types checked, the command line wins.

Pure and synchronous: the loader is tried on strings, and on a file in tmp_path.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.cmd.chatserver import build_parser
from machat.config_file import (
    ConfigError,
    Key,
    given_on_command_line,
    keys_of,
    merge,
    parse_config,
    read_config,
)


def toy_parser() -> argparse.ArgumentParser:
    """Every kind of flag the loader knows, in one parser."""
    p = argparse.ArgumentParser(prog="toy")
    p.add_argument("--config")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--label", default="x")
    p.add_argument("--level", choices=["LOW", "HIGH"], default="LOW")
    p.add_argument("--shout", type=str.upper, default="A")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--operator", dest="operators", action="append", default=[])
    p.add_argument("-a", "--address", dest="address", default="here")
    return p


# --- a tiny TOML writer for the tests (tomllib only reads) ------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def toml_document(table: dict[str, object]) -> str:
    return "".join(f"{toml_value(k)} = {toml_value(v)}\n" for k, v in table.items())


# --- strategies ---------------------------------------------------------------------

toml_ints = st.integers(-(2**63), 2**63 - 1)
toml_floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=20)


def valid_value(key: Key) -> st.SearchStrategy[Any]:
    if key.choices is not None:
        one: st.SearchStrategy[Any] = st.sampled_from(key.choices)
    elif key.kind is bool:
        one = st.booleans()
    elif key.kind is int:
        one = toml_ints
    elif key.kind is float:
        one = toml_floats | toml_ints
    elif key.convert is str.upper:
        one = st.text(alphabet="ABCXYZ", max_size=5)  # already upper: converts to itself
    else:
        assert key.convert is None, f"no strategy for {key.name}"
        one = texts
    return st.lists(one, max_size=3) if key.repeated else one


def configs(parser: argparse.ArgumentParser) -> st.SearchStrategy[dict[str, Any]]:
    keys = keys_of(parser)
    return st.fixed_dictionaries({}, optional={name: valid_value(k) for name, k in keys.items()})


everything = [toml_ints, toml_floats, texts, st.booleans(), st.lists(toml_ints, max_size=2)]


def wrong_value(key: Key) -> st.SearchStrategy[Any]:
    """A value of a TOML type the key does not take."""

    def bad(value: object) -> bool:
        if key.repeated:
            return not isinstance(value, list)
        if key.kind is float:
            return isinstance(value, bool) or not isinstance(value, int | float)
        if key.kind is int:
            return isinstance(value, bool) or not isinstance(value, int)
        return not isinstance(value, key.kind)

    return st.one_of(everything).filter(bad)


# --- properties ---------------------------------------------------------------------


@pytest.mark.parametrize("make_parser", [toy_parser, build_parser])
@given(data=st.data())
def test_any_valid_config_round_trips(make_parser, data: st.DataObject) -> None:
    parser = make_parser()
    keys = keys_of(parser)
    table = data.draw(configs(parser))
    values = parse_config(toml_document(table), keys)
    expected = {}
    for name, value in table.items():
        key = keys[name]
        if key.kind is float:
            value = [float(v) for v in value] if key.repeated else float(value)
        expected[key.dest] = value
    assert values == expected
    merged = merge(parser.parse_args([]), values, pinned=set())
    for dest, value in expected.items():
        assert getattr(merged, dest) == value


@pytest.mark.parametrize("make_parser", [toy_parser, build_parser])
@given(data=st.data())
def test_any_wrongly_typed_key_is_named(make_parser, data: st.DataObject) -> None:
    parser = make_parser()
    keys = keys_of(parser)
    table = data.draw(configs(parser))
    name = data.draw(st.sampled_from(sorted(keys)))
    table[name] = data.draw(wrong_value(keys[name]))
    with pytest.raises(ConfigError) as info:
        parse_config(toml_document(table), keys, "my.toml")
    message = str(info.value)
    assert info.value.key == name
    assert message.startswith(f"my.toml: key {name}")
    assert "\n" not in message


@given(data=st.data(), unknown=st.text(min_size=1, max_size=20))
def test_any_unknown_key_is_named(data: st.DataObject, unknown: str) -> None:
    parser = build_parser()
    keys = keys_of(parser)
    table = data.draw(configs(parser))
    if unknown in keys:
        unknown += "-x"
    table[unknown] = data.draw(st.one_of(everything))
    with pytest.raises(ConfigError) as info:
        parse_config(toml_document(table), keys, "my.toml")
    assert info.value.key == unknown
    assert "unknown key" in str(info.value)
    assert "\n" not in str(info.value)


# --- examples -----------------------------------------------------------------------


def test_every_server_flag_has_a_key_named_like_it() -> None:
    parser = build_parser()
    keys = keys_of(parser)
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "config"):
            continue
        assert action.dest.replace("_", "-") in keys
        if action.dest != "operators":
            assert f"--{action.dest.replace('_', '-')}" in longs


def test_keys_have_the_flags_types() -> None:
    keys = keys_of(toy_parser())
    assert keys["count"].kind is int
    assert keys["ratio"].kind is float
    assert keys["label"].kind is str
    assert keys["level"].choices == ("LOW", "HIGH")
    assert keys["verbose"].kind is bool
    assert keys["operators"].repeated
    assert keys["address"].dest == "address"
    assert "config" not in keys
    assert "help" not in keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("count = 1.5", "t.toml: key count: expected an integer, not a float"),
        ("count = true", "t.toml: key count: expected an integer, not a boolean"),
        ('ratio = "1"', "t.toml: key ratio: expected a number, not a string"),
        ("label = 5", "t.toml: key label: expected a string, not an integer"),
        ('level = "MID"', "t.toml: key level: expected one of 'LOW', 'HIGH', not 'MID'"),
        ("verbose = 1", "t.toml: key verbose: expected true or false, not an integer"),
        ('operators = "Mina"', "t.toml: key operators: expected an array of strings, not a string"),
        ('operators = ["Mina", 3]', "t.toml: key operators[1]: expected a string, not an integer"),
        ("colour = 1", "t.toml: unknown key colour"),
        ("[server]\ncount = 1", "t.toml: unknown key server"),
        ("when = 2026-12-01", "t.toml: key when"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    keys = keys_of(toy_parser())
    if text.startswith("when"):
        keys = {**keys, "when": Key("when", "when", str)}
    with pytest.raises(ConfigError) as info:
        parse_config(text, keys, "t.toml")
    assert str(info.value).startswith(message)


def test_float_keys_take_integers() -> None:
    assert parse_config("ratio = 2", keys_of(toy_parser())) == {"ratio": 2.0}
    assert isinstance(parse_config("ratio = 2", keys_of(toy_parser()))["ratio"], float)


def test_a_flag_type_function_converts_file_values_too() -> None:
    assert parse_config('shout = "hey"', keys_of(toy_parser())) == {"shout": "HEY"}


def test_broken_toml_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("count = = 1", keys_of(toy_parser()), "t.toml")
    assert str(info.value).startswith("t.toml: not valid TOML: ")
    assert "\n" not in str(info.value)


def test_the_command_line_wins(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('count = 7\nlabel = "file"\noperators = ["Mina"]\nverbose = true\n')
    parser = toy_parser()
    argv = ["--count", "9", "--operator", "Bob"]
    args = parser.parse_args(argv)
    pinned = given_on_command_line(parser, argv)
    assert pinned == {"count", "operators"}
    merged = merge(args, read_config(str(path), keys_of(parser)), pinned)
    assert merged.count == 9
    assert merged.operators == ["Bob"]  # the flags replace the file's list
    assert merged.label == "file"
    assert merged.verbose is True
    assert math.isclose(merged.ratio, 0.5)
    # given_on_command_line leaves the parser's defaults as they were
    assert parser.parse_args([]).count == 3


def test_unreadable_files_are_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config(str(tmp_path / "missing.toml"), keys_of(toy_parser()))
    assert "missing.toml" in str(info.value)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'label = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        read_config(str(bad), keys_of(toy_parser()))
    assert "not UTF-8" in str(info.value)
