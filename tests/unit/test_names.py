"""The one rule for guest, host and pool names, and how user text is shown in errors."""

from __future__ import annotations

import pytest

from cpuver.errors import InvalidSpec, UnknownModel, shown
from cpuver.names import NAME_MAX, InvalidName, check_name, is_name


@pytest.mark.parametrize(
    "name", ["web1", "hv1.rack3.example.com", "db_2", "a", "9lives", "x" * NAME_MAX, "Web-01"]
)
def test_host_names_and_guest_names_as_people_write_them_are_names(name: str) -> None:
    assert is_name(name)
    assert check_name("guest", name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "/srv/data", "a/b", "-rf", ".hidden", "a\0b", "a b", "web\n1",
     "\x1b[31m", "caf\u00e9", "x" * (NAME_MAX + 1), None, 7, ["web1"]],
)  # fmt: skip
def test_paths_control_characters_and_non_strings_are_not_names(name: object) -> None:
    assert not is_name(name)
    with pytest.raises(InvalidName, match=r"pool name .* is not valid: expected 1 to 128"):
        check_name("pool", name)


def test_an_invalid_name_error_names_where_it_came_from() -> None:
    with pytest.raises(InvalidName) as caught:
        check_name("guest", "../x", "web1.xml: domain/name")
    assert str(caught.value).startswith("web1.xml: domain/name: guest name '../x' is not valid")


def test_a_huge_input_is_shown_cut_with_its_length() -> None:
    text = shown("m" * 100_000_000)
    assert len(text) < 100
    assert text.endswith("... (100,000,000 characters)")


def test_control_characters_are_shown_escaped() -> None:
    assert shown("\x1b[2J\0") == "'\\x1b[2J\\x00'"


def test_an_unknown_model_of_a_megabyte_is_not_echoed_whole() -> None:
    assert len(str(UnknownModel("H" * 1_000_000))) < 200


def test_a_spec_error_in_a_long_spec_shows_the_part_around_the_position() -> None:
    spec = "Haswell," + "+avx," * 1000 + ",,"
    error = InvalidSpec("empty option", spec, len(spec) - 1)
    text = str(error)
    assert len(text) < 300
    line, marker = text.splitlines()[1:]
    assert line.strip().endswith(",,") and marker.strip() == "^"
    assert line.rindex(",") == marker.index("^")  # the marker stands under the bad comma
