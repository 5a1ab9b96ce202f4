"""cpuver's metadata element and the fingerprint (domain/pinmeta.py), written without the json,
hashlib and ElementTree modules for the hook's start-up time: the same answers as they give."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpuver.domain import pinmeta

texts = st.text(max_size=20)
SIGNATURE = {
    "vendor": "GenuineIntel", "family": 6, "model": 44, "stepping": 1,
    "model-id": 'Westmere "E56xx" \\ é', "min-level": 11, "min-xlevel": 2147483656,
}  # fmt: skip


@given(st.lists(texts), st.lists(texts), texts, texts, texts)
def test_canonical_json_is_json_dumps_sorted_and_compact(
    on: list[str], off: list[str], version: str, machine: str, model_id: str
) -> None:
    signature = {**SIGNATURE, "model-id": model_id}
    document = {
        "version": version,
        "machine": machine,
        "features": {"on": sorted(set(on)), "off": sorted(set(off))},
        "signature": signature,
    }
    expected = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert pinmeta.canonical_json(version, machine, on, off, signature) == expected


def test_the_fingerprint_is_sha256_of_the_canonical_json() -> None:
    text = pinmeta.canonical_json("Westmere-v1", "pc-q35-10.0", ["aes"], ["avx"], SIGNATURE)
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert pinmeta.fingerprint("Westmere-v1", "pc-q35-10.0", ["aes"], ["avx"], SIGNATURE) == (
        expected
    )


DOC = f"""<domain type='qemu'>
  <name>web1</name>
  <metadata><cpuver:cpu xmlns:cpuver="{pinmeta.NAMESPACE}" version="best"/></metadata>
  <os><type machine='pc-q35-10.0'>hvm</type></os>
  <cpu><model>Westmere-v1</model><feature name='aes'/><feature name='avx' policy='disable'/></cpu>
</domain>"""


@pytest.mark.parametrize("path", ["name", "os/type", "cpu/model", f"metadata/{pinmeta.TAG}"])
def test_the_small_tree_finds_what_elementtree_finds(path: str) -> None:
    mine, theirs = pinmeta.parse(DOC).find(path), ET.fromstring(DOC).find(path)
    assert mine is not None and theirs is not None
    assert (mine.tag, dict(mine.attrib), (mine.text or "").strip()) == (
        theirs.tag,
        dict(theirs.attrib),
        (theirs.text or "").strip(),
    )


def test_the_small_tree_iterates_children_in_order() -> None:
    names = [f.get("name") for f in pinmeta.parse(DOC).iterfind("cpu/feature")]
    assert names == ["aes", "avx"]
    assert pinmeta.parse(DOC).findtext("missing") is None


def test_the_small_tree_refuses_a_document_type_declaration() -> None:
    from xml.parsers.expat import ExpatError

    with pytest.raises(ExpatError):
        pinmeta.parse('<!DOCTYPE d [<!ENTITY x "y">]><domain>&x;</domain>')
