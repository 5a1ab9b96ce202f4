"""User documents decoded as their format decodes them, and JSON read without surprises."""

from __future__ import annotations

import json

import pytest

from cpuver.documents import UnreadableDocument, json_text, load_json, text_of, xml_text


def test_xml_with_a_declared_latin1_encoding_is_decoded_with_it() -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><a>caf\u00e9</a>'.encode("latin-1")
    assert "caf\u00e9" in xml_text(data, "a.xml")


def test_xml_with_a_utf16_byte_order_mark_is_decoded_with_it() -> None:
    assert xml_text("<a>\u00e9</a>".encode("utf-16"), "a.xml") == "<a>\u00e9</a>"


def test_xml_naming_an_unknown_encoding_is_refused_naming_it() -> None:
    with pytest.raises(UnreadableDocument, match="unknown encoding 'klingon'"):
        xml_text(b'<?xml version="1.0" encoding="klingon"?><a/>', "a.xml")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-32"])
def test_json_in_any_unicode_encoding_is_read(encoding: str) -> None:
    assert json.loads(json_text('{"name": "web1"}'.encode(encoding), "g.json")) == {"name": "web1"}


def test_a_bad_byte_is_named_with_its_offset() -> None:
    with pytest.raises(UnreadableDocument, match=r"a\.json: not UTF-8 text: byte 0xff at offset 3"):
        json_text(b'{"a\xff": 1}', "a.json")


def test_the_format_is_told_by_the_suffix_else_by_the_first_bytes() -> None:
    latin1 = '<?xml version="1.0" encoding="latin-1"?><a>\u00e9</a>'.encode("latin-1")
    assert text_of(latin1, "definition").endswith("\u00e9</a>")
    assert text_of(b'{"a": 1}', "definition") == '{"a": 1}'
    with pytest.raises(UnreadableDocument):
        text_of(b"a = '\xe9'", "g.toml")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("[" * 100_000, "nested too deeply"), ("9" * 5000, "number too long"), ("{", "line 1")],
)
def test_load_json_turns_every_failure_into_one_error(text: str, problem: str) -> None:
    with pytest.raises(UnreadableDocument, match=problem):
        load_json(text, "x.json")
