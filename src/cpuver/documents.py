"""User documents as text, the way their format reads them, and JSON read without surprises.

A file of any bytes must give a one-line error, never a traceback: XML is decoded as XML says
(a byte order mark, else the encoding its declaration names, else UTF-8), JSON as RFC 8259 says
(UTF-8, or UTF-16/32 told apart by the zero bytes as Python's ``json`` does), TOML as UTF-8.
A byte that does not decode is named with its offset. :func:`load_json` turns what the ``json``
module raises besides syntax errors (nesting deeper than the interpreter's stack, integers of
thousands of digits) into the same kind of error. :func:`xml_root` parses XML that declares no
document type (a DTD's entities can expand without limit or read local files: refused, not
defused). Pure: bytes in, text or values out.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cpuver.errors import CpuverError

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

_XML_DECLARATION = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_XML_BOMS = tuple(bom + b"<" for bom, _encoding in _BOMS)
_DOCUMENT_TYPE = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


class UnreadableDocument(CpuverError):
    """A document whose bytes or structure cannot be read (``source`` names it)."""


def _decode(data: bytes, encoding: str, source: str, why: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        raise UnreadableDocument(
            f"{source}: not {why} text: byte 0x{bad} at offset {err.start} does not decode"
        ) from err


def xml_text(data: bytes, source: str) -> str:
    """The text of an XML document as XML decodes it (BOM, declared encoding, else UTF-8)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode(data, encoding, source, encoding.upper().removesuffix("-SIG"))
    declared = _XML_DECLARATION.match(data.lstrip()[:200])
    if declared is not None:
        name = declared[1].decode("ascii")
        try:
            codec = codecs.lookup(name)
        except LookupError as err:
            raise UnreadableDocument(
                f"{source}: the XML declaration names an unknown encoding {name!r}"
            ) from err
        return _decode(data, codec.name, source, f"{name} (as its XML declaration says)")
    return _decode(data, "utf-8", source, "UTF-8")


def json_text(data: bytes, source: str) -> str:
    """The text of a JSON document (UTF-8, UTF-16 or UTF-32, as ``json`` detects them)."""
    encoding = json.detect_encoding(data)
    return _decode(data, encoding, source, encoding.upper().removesuffix("-SIG"))


def utf8_text(data: bytes, source: str) -> str:
    """The text of a UTF-8 document (TOML, or a format that is not known yet)."""
    return _decode(data, "utf-8", source, "UTF-8")


def text_of(data: bytes, source: str) -> str:
    """The text of a guest or host document of any accepted format, told by ``source``'s suffix
    (``.xml``, ``.json``, ``.toml``), else by its first bytes."""
    suffix = source.rsplit(".", 1)[-1].lower() if "." in source else ""
    start = data.lstrip()[:4]
    if suffix == "xml" or (suffix not in ("json", "toml") and start.startswith((b"<", *_XML_BOMS))):
        return xml_text(data, source)
    if suffix == "toml":
        return utf8_text(data, source)
    return json_text(data, source)


@contextmanager
def _json_problems(source: str) -> Iterator[None]:
    """Whatever the ``json`` module raises, as an :class:`UnreadableDocument` naming the place."""
    try:
        yield
    except json.JSONDecodeError as err:
        raise UnreadableDocument(
            f"{source}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except RecursionError as err:
        raise UnreadableDocument(f"{source}: JSON nested too deeply to read") from err
    except ValueError as err:  # an integer of more digits than Python converts
        raise UnreadableDocument(f"{source}: JSON holds a number too long to read") from err


def load_json(text: str, source: str) -> Any:
    """``json.loads`` whose every failure is an :class:`UnreadableDocument` naming the place."""
    with _json_problems(source):
        return json.loads(text)


def json_values(text: str, source: str) -> list[Any]:
    """The JSON values of ``text`` one after another (a QMP transcript: one reply per line, or
    several written back to back), each failure as :func:`load_json` reports it."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return found
        with _json_problems(source):
            value, position = decoder.raw_decode(text, position)
        found.append(value)


class UnreadableXml(UnreadableDocument):
    """XML that cannot be read: what is wrong and where (1-based line and column)."""

    def __init__(self, source: str, problem: str, line: int, column: int) -> None:
        self.source, self.problem, self.line, self.column = source, problem, line, column
        super().__init__(f"{source}: line {line}, column {column}: {problem}")


def xml_root(text: str, source: str) -> ET.Element:
    """The root element of XML ``text``; :class:`UnreadableXml` names the place."""
    import xml.etree.ElementTree as ET  # here: most commands read no XML (start-up time)

    found = _DOCUMENT_TYPE.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        raise UnreadableXml(
            source,
            f"<!{found[1].upper()} is refused: document type declarations and entities are "
            "not accepted (they can expand without limit or read local files)",
            line,
            column,
        )
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        line, column = err.position
        problem = str(err).split(":")[0]
        raise UnreadableXml(source, f"malformed XML: {problem}", line, column + 1) from err
