"""The CPU spec grammar: what users may type, what it means, and where errors point."""

from __future__ import annotations

import pytest

from cpuver.errors import InvalidSpec
from cpuver.spec import FeatureChange, Spec, VersionSelector, parse


def rejected(text: str) -> InvalidSpec:
    """Parse ``text``, which must fail, and return the error."""
    with pytest.raises(InvalidSpec) as caught:
        parse(text)
    return caught.value


def blamed(text: str) -> str:
    """The part of ``text`` the error for it points at."""
    error = rejected(text)
    return text[error.start : error.end]


# names


def test_bare_name_has_no_version() -> None:
    """A bare name leaves the version to the machine type, so nothing is recorded."""
    assert parse("Haswell") == Spec("Haswell")


@pytest.mark.parametrize(
    "name",
    ["Haswell-noTSX-IBRS", "Opteron_G3", "486", "qemu64", "EPYC-Rome-v4", "Haswell-2.12.0"],
)
def test_name_is_kept_exactly_as_typed(name: str) -> None:
    """The parser does not know the catalog: any well-formed name is just a name."""
    assert parse(name).name == name


def test_versioned_name_is_not_split() -> None:
    """``Haswell-v4`` is a name the catalog resolves; the parser records no version for it."""
    assert parse("Haswell-v4") == Spec("Haswell-v4")


def test_whitespace_around_tokens_is_ignored() -> None:
    """Users paste specs with spaces after commas and around '='."""
    assert parse("  Haswell , version = v2 , + pcid , hle = off , enforce ") == parse(
        "Haswell,version=v2,+pcid,hle=off,enforce"
    )


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_rejected(text: str) -> None:
    """There is no default model."""
    assert rejected(text).message == "empty CPU spec"


def test_missing_name_is_rejected() -> None:
    """The first item is always the model name."""
    assert rejected(",+pcid").message == "missing CPU model name"


def test_name_must_start_with_letter_or_digit() -> None:
    """A leading sign would make a feature change look like a model name."""
    error = rejected("-pcid")
    assert (error.message, error.start) == ("CPU model name must start with a letter or digit", 0)


def test_bad_character_in_name_is_pointed_at() -> None:
    """The marker lands on the first character that cannot be part of a name."""
    assert blamed("Has well,+pcid") == " "


# versions


@pytest.mark.parametrize("selector", [VersionSelector("best"), VersionSelector("latest")])
def test_keyword_selector_is_recorded_as_its_kind(selector: VersionSelector) -> None:
    """``best`` and ``latest`` are only recorded here; resolution decides what they mean."""
    assert parse(f"Haswell,version={selector.kind}").version == selector


@pytest.mark.parametrize("selector", ["v4", "4"])
def test_number_selector_accepts_v_prefix_or_plain_number(selector: str) -> None:
    """QEMU names versions ``-v4``; both spellings mean version 4."""
    assert parse(f"Haswell,version={selector}").version == VersionSelector("number", number=4)


def test_release_selector_is_padded_to_three_parts() -> None:
    """``2.12`` and ``2.12.0`` are the same QEMU release."""
    assert parse("Haswell,version=2.12").version == VersionSelector("release", release=(2, 12, 0))


def test_release_selector_keeps_three_parts() -> None:
    """A micro release is not dropped."""
    assert parse("Haswell,version=2.12.1").version == VersionSelector("release", release=(2, 12, 1))


def test_best_on_means_version_best() -> None:
    """``best=on`` is the short spelling of ``version=best``."""
    assert parse("Haswell,best=on") == parse("Haswell,version=best")


def test_best_off_records_nothing() -> None:
    """``best=off`` is the default, so it must not turn into a version."""
    assert parse("Haswell,best=off") == Spec("Haswell")


def test_best_takes_only_on_or_off() -> None:
    """``best`` is not a feature, so the feature spellings true/yes do not apply."""
    assert blamed("Haswell,best=yes") == "yes"


@pytest.mark.parametrize("selector", ["v0", "0", "v00"])
def test_version_zero_is_rejected(selector: str) -> None:
    """QEMU numbers versions from 1."""
    error = rejected(f"Haswell,version={selector}")
    assert error.message.startswith("version numbers start at 1")


def test_leading_zero_in_version_number_is_rejected() -> None:
    """``v04`` is most likely a typo; one spelling per version keeps pins comparable."""
    assert rejected("Haswell,version=v04").message == "version number 'v04' has a leading zero"


def test_huge_version_number_is_rejected() -> None:
    """No catalog has that many versions; refuse rather than carry an absurd number."""
    assert blamed("Haswell,version=v12345678901") == "v12345678901"


@pytest.mark.parametrize("selector", ["newest", "2.x", "V4", "1.2.3.4", "v", "-1"])
def test_unknown_selector_lists_the_choices(selector: str) -> None:
    """The message tells the user every accepted form."""
    error = rejected(f"Haswell,version={selector}")
    assert error.message == (
        f"unknown version selector {selector!r}: use best, latest, vN, N or a release like 2.12.0"
    )
    assert error.text[error.start : error.end] == selector


def test_missing_selector_points_after_equals() -> None:
    """An empty selector still gets a marker, just past the '='."""
    error = rejected("Haswell,version=")
    assert (error.start, error.end) == (16, 17)


@pytest.mark.parametrize(
    ("text", "second"),
    [
        ("Haswell,version=best,version=v2", "version=v2"),
        ("Haswell,best=on,version=v2", "version=v2"),
        ("Haswell,version=v2,best=on", "best=on"),
        ("Haswell,best=on,best=on", "best=on"),
    ],
)
def test_version_given_twice_points_at_the_second(text: str, second: str) -> None:
    """The first choice stands; the one that contradicts it is blamed."""
    error = rejected(text)
    assert error.message == "version given twice"
    assert (error.start, error.end) == (text.rindex(second), len(text))


@pytest.mark.parametrize("item", ["version=best", "best=on", "version=2"])
def test_versioned_name_with_version_item_is_rejected(item: str) -> None:
    """``Haswell-v4`` already fixes the version; a second choice would be ambiguous."""
    text = f"Haswell-v4,{item}"
    error = rejected(text)
    assert error.message == f"'Haswell-v4' already names a version: drop {item!r} or use 'Haswell'"
    assert text[error.start : error.end] == item


# feature changes


def test_plus_and_minus_switch_features_on_and_off() -> None:
    """QEMU's short forms for feature=on and feature=off."""
    assert parse("Haswell,+pcid,-hle").changes == (
        FeatureChange("pcid", True),
        FeatureChange("hle", False),
    )


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("on", True), ("true", True), ("yes", True), ("off", False), ("false", False), ("no", False)],
)
def test_feature_value_spellings(value: str, enabled: bool) -> None:
    """QEMU accepts every boolean spelling for feature properties."""
    assert parse(f"Haswell,pcid={value}").changes == (FeatureChange("pcid", enabled),)


def test_feature_underscore_is_read_as_dash() -> None:
    """QEMU treats ``lahf_lm`` and ``lahf-lm`` as the same property."""
    assert parse("Haswell,+lahf_lm").changes == (FeatureChange("lahf-lm", True),)


def test_feature_case_is_kept() -> None:
    """Lower-casing would hide a typo that resolution should report."""
    assert parse("Haswell,+PCID").changes == (FeatureChange("PCID", True),)


def test_changes_keep_their_order() -> None:
    """Order is part of what the user wrote; the canonical form must not reshuffle it."""
    names = [change.name for change in parse("Haswell,+xsave,hle=off,-avx2,rtm=on").changes]
    assert names == ["xsave", "hle", "avx2", "rtm"]


@pytest.mark.parametrize(
    "text", ["Haswell,+pcid,-pcid", "Haswell,hle=off,hle=off", "Haswell,+lahf_lm,lahf-lm=on"]
)
def test_same_feature_twice_points_at_the_second(text: str) -> None:
    """Two changes to one feature are contradictory or redundant; either way a mistake."""
    error = rejected(text)
    assert error.message.endswith("changed twice")
    assert (error.start, error.end) == (text.rindex(",") + 1, len(text))


def test_bad_feature_value_is_pointed_at() -> None:
    """Only on/off values exist for features; the value is blamed, not the name."""
    error = rejected("Haswell,hle=maybe")
    assert error.message == "bad value 'maybe' for 'hle': use on or off"
    assert error.text[error.start : error.end] == "maybe"


@pytest.mark.parametrize("text", ["Haswell,+", "Haswell,-", "Haswell,=on"])
def test_missing_feature_name_is_rejected(text: str) -> None:
    """A sign or value needs a feature to apply to."""
    assert rejected(text).message == "missing feature name"


def test_bad_character_in_feature_name_is_pointed_at() -> None:
    """The marker lands on the character that cannot be part of a feature name."""
    assert blamed("Haswell,+pc!d") == "!"


@pytest.mark.parametrize("text", ["Haswell,+enforce", "Haswell,-version", "Haswell,+best"])
def test_option_is_not_a_feature(text: str) -> None:
    """Treating options as features would print as e.g. ``enforce=on``, which means nothing."""
    assert rejected(text).message.endswith("is an option, not a feature")


# enforce and item syntax


def test_enforce_is_recorded() -> None:
    """``enforce`` makes missing features an error at resolution time."""
    assert parse("Haswell,enforce").enforce


def test_enforce_defaults_to_off() -> None:
    """QEMU only warns about missing features unless told to enforce."""
    assert not parse("Haswell").enforce


def test_enforce_twice_is_rejected() -> None:
    """A repeated flag is a sign of a mangled spec."""
    text = "Haswell,enforce,enforce"
    error = rejected(text)
    assert (error.message, error.start) == ("enforce given twice", text.rindex("enforce"))


def test_enforce_takes_no_value() -> None:
    """``enforce`` is a flag; ``enforce=off`` would silently mean the opposite of enforcing."""
    assert rejected("Haswell,enforce=off").message == "enforce takes no value"


@pytest.mark.parametrize(
    ("text", "start", "end"), [("Haswell,,+pcid", 8, 9), ("Haswell,", 8, 9), ("Haswell, ,x", 8, 9)]
)
def test_empty_item_is_rejected(text: str, start: int, end: int) -> None:
    """Stray commas usually mean something was lost; the gap is pointed at."""
    error = rejected(text)
    assert (error.message, error.start, error.end) == ("empty item", start, end)


def test_unknown_item_is_rejected() -> None:
    """A bare word is neither a change nor an option (QEMU's legacy ``pcid`` form is not kept)."""
    error = rejected("Haswell,pcid")
    assert error.message.startswith("unknown item 'pcid': use +feat, -feat")
    assert error.text[error.start : error.end] == "pcid"


@pytest.mark.parametrize(
    ("text", "key", "option"),
    [
        ("Haswell,verison=best", "verison", "version"),
        ("Haswell,vesion=2.12.0", "vesion", "version"),
        ("Haswell,+pcid,versio=latest", "versio", "version"),
    ],
)
def test_misspelt_option_key_suggests_the_option_and_points_at_the_key(
    text: str, key: str, option: str
) -> None:
    error = rejected(text)
    assert error.message == f"unknown option {key!r} (did you mean {option}?)"
    assert error.text[error.start : error.end] == key


def test_misspelt_enforce_suggests_enforce() -> None:
    error = rejected("Haswell,enforced")
    assert error.message == "unknown item 'enforced' (did you mean enforce?)"


def test_feature_switched_on_or_off_is_not_taken_for_an_option() -> None:
    """``bets=on`` may be a feature: parsing is syntactic, resolution decides (and hints)."""
    assert parse("Haswell,bets=on").changes == (FeatureChange("bets", True),)


# canonical form


def test_canonical_form_puts_version_then_changes_then_enforce() -> None:
    """One spelling per meaning, so equal specs print equal and can be compared as text."""
    spec = parse("Haswell, +pcid ,hle=off,best=on,enforce")
    assert str(spec) == "Haswell,version=best,pcid=on,hle=off,enforce"


def test_canonical_form_of_bare_name_is_the_name() -> None:
    """Nothing is added to a spec that asks for nothing more."""
    assert str(parse("Haswell")) == "Haswell"


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        (VersionSelector("best"), "best"),
        (VersionSelector("latest"), "latest"),
        (VersionSelector("number", number=4), "v4"),
        (VersionSelector("release", release=(2, 12, 0)), "2.12.0"),
    ],
)
def test_selector_canonical_form(selector: VersionSelector, text: str) -> None:
    """Numbers print with QEMU's ``v`` prefix, releases with all three parts."""
    assert str(selector) == text


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "number"},
        {"kind": "number", "number": 0},
        {"kind": "release"},
        {"kind": "best", "number": 2},
        {"kind": "latest", "release": (2, 12, 0)},
        {"kind": "release", "release": (2, -1, 0)},
        {"kind": "newest"},
    ],
)
def test_selector_rejects_inconsistent_fields(fields: dict[str, object]) -> None:
    """A selector built by hand must still print as something that parses back."""
    with pytest.raises(ValueError, match="inconsistent version selector"):
        VersionSelector(**fields)  # type: ignore[arg-type]
