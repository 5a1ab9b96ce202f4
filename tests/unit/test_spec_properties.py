"""Properties of the spec grammar that must hold for every input, not just the examples."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from cpuver.errors import InvalidSpec
from cpuver.spec import FeatureChange, Spec, VersionSelector, parse

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
# Canonical feature names: "_" is already normalised to "-", and options are not features.
features = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,15}", fullmatch=True).filter(
    lambda name: name not in {"version", "best", "enforce"}
)
parts = st.integers(min_value=0, max_value=999_999_999)
selectors = st.one_of(
    st.just(VersionSelector("best")),
    st.just(VersionSelector("latest")),
    st.integers(min_value=1, max_value=999_999_999).map(
        lambda number: VersionSelector("number", number=number)
    ),
    st.tuples(parts, parts, parts).map(lambda release: VersionSelector("release", release=release)),
)
changes = st.lists(st.tuples(features, st.booleans()), unique_by=lambda change: change[0]).map(
    lambda pairs: tuple(FeatureChange(name, enabled) for name, enabled in pairs)
)
specs = st.builds(Spec, names, st.none() | selectors, changes, st.booleans()).filter(
    # A name like Haswell-v4 already names a version, so it cannot also carry one.
    lambda spec: spec.version is None or not re.fullmatch(r".*-v[0-9]+", spec.name)
)
# Text built from grammar fragments reaches far deeper into the parser than arbitrary text.
punctuation = [" ", "\t", ",", "=", "+", "-", "_", ".", "!"]
words = ["Haswell", "-v4", "v4", "pcid", "lahf_lm", "version", "best", "latest", "enforce"]
values = ["on", "off", "yes", "0", "1", "2.12"]
fragments = st.lists(st.sampled_from([*punctuation, *words, *values])).map("".join)


def assert_well_formed_error(text: str, error: InvalidSpec) -> None:
    assert 0 <= error.start < error.end <= len(text) + 1
    assert error.text == text


@given(specs)
def test_canonical_form_parses_back_to_the_same_spec(spec: Spec) -> None:
    """str() is a faithful serialisation: nothing is lost or reinterpreted."""
    assert parse(str(spec)) == spec


@given(specs)
def test_canonical_form_is_a_fixed_point(spec: Spec) -> None:
    """Printing a parsed canonical spec changes nothing, so pins compare as text."""
    assert str(parse(str(spec))) == str(spec)


@given(specs)
def test_spaces_around_items_do_not_change_the_meaning(spec: Spec) -> None:
    """Whitespace around tokens is ignored."""
    assert parse(" , ".join(str(spec).split(","))) == spec


@given(st.text())
def test_any_text_parses_or_raises_invalid_spec(text: str) -> None:
    """Users can type anything; the only failure is InvalidSpec with a span inside the text."""
    try:
        parse(text)
    except InvalidSpec as error:
        assert_well_formed_error(text, error)


@given(fragments)
def test_spec_like_text_parses_to_a_stable_canonical_form(text: str) -> None:
    """Whatever parses, however it was spelled, has a canonical form that parses back to it."""
    try:
        spec = parse(text)
    except InvalidSpec as error:
        assert_well_formed_error(text, error)
    else:
        assert parse(str(spec)) == spec
