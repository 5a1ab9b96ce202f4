"""CPU specs: what a user types to ask for a CPU, parsed and printed in canonical form.

The grammar follows QEMU's ``-cpu`` option::

    spec     := name ("," item)*
    name     := [A-Za-z0-9][A-Za-z0-9_.-]*
    item     := "version=" selector | "best=on" | "best=off" | "+" feat | "-" feat
              | feat "=" ("on" | "off" | "true" | "false" | "yes" | "no") | "enforce"
    feat     := [A-Za-z0-9][A-Za-z0-9_.-]*          ("_" is read as "-", as QEMU does)
    selector := "best" | "latest" | "v" N | N | X.Y | X.Y.Z

Whitespace around tokens is ignored. Parsing is purely syntactic: whether a model, version or
feature exists is for resolution to decide. Every error is an :class:`InvalidSpec` pointing at the
offending span of the text as typed. ``str()`` of a :class:`Spec` is its canonical form, which
parses back to an equal spec.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from cpuver.errors import InvalidSpec

__all__ = ["FeatureChange", "SelectorKind", "Spec", "VersionSelector", "option_like", "parse"]

SelectorKind = Literal["best", "latest", "number", "release"]

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VERSIONED_NAME = re.compile(r"(.*)-v[0-9]+")
_NUMBER = re.compile(r"v?([0-9]+)")
_RELEASE = re.compile(r"([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")
_MAX_DIGITS = 9
_SWITCH = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}
_OPTIONS = frozenset({"version", "best", "enforce"})
_ITEM_HELP = "use +feat, -feat, feat=on|off, version=..., best=on|off or enforce"
_SELECTOR_HELP = "use best, latest, vN, N or a release like 2.12.0"


def option_like(word: str) -> str | None:
    """The spec option (version, best, enforce) that ``word`` is probably a misspelling of."""
    close = difflib.get_close_matches(word.lower(), sorted(_OPTIONS), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass(frozen=True, slots=True)
class VersionSelector:
    """Which version of a model a spec asks for.

    ``number`` is set only for kind ``"number"`` (1 or more), ``release`` only for kind
    ``"release"`` (always three parts).
    """

    kind: SelectorKind
    number: int | None = None
    release: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        valid = {
            "best": self.number is None and self.release is None,
            "latest": self.number is None and self.release is None,
            "number": self.number is not None and self.number >= 1 and self.release is None,
            "release": self.release is not None and self.number is None and min(self.release) >= 0,
        }
        if not valid.get(self.kind, False):
            raise ValueError(f"inconsistent version selector: {self!r}")

    def __str__(self) -> str:
        if self.number is not None:
            return f"v{self.number}"
        if self.release is not None:
            return ".".join(map(str, self.release))
        return self.kind


@dataclass(frozen=True, slots=True)
class FeatureChange:
    """One feature switched on or off after the version is chosen (``+pcid``, ``hle=off``)."""

    name: str
    enabled: bool

    def __str__(self) -> str:
        return f"{self.name}={'on' if self.enabled else 'off'}"


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed CPU spec. ``changes`` keep the order they were given in."""

    name: str
    version: VersionSelector | None = None
    changes: tuple[FeatureChange, ...] = ()
    enforce: bool = False

    def __str__(self) -> str:
        parts = [self.name]
        if self.version is not None:
            parts.append(f"version={self.version}")
        parts += map(str, self.changes)
        if self.enforce:
            parts.append("enforce")
        return ",".join(parts)


def parse(text: str) -> Spec:
    """Parse a CPU spec such as ``"Haswell,version=2.12.0,+pcid,hle=off,enforce"``.

    Raises :class:`InvalidSpec` pointing at the offending span of ``text``.
    """
    return _Parser(text).parse()


@dataclass(frozen=True, slots=True)
class _Token:
    """A piece of the text without surrounding whitespace; ``start``/``end`` index the text."""

    value: str
    start: int
    end: int


def _token(text: str, start: int, end: int) -> _Token:
    raw = text[start:end]
    lead = len(raw) - len(raw.lstrip())
    value = raw.strip()
    return _Token(value, start + lead, start + lead + len(value))


def _item_bounds(text: str) -> list[tuple[int, int]]:
    """The (start, end) of every comma-separated piece of ``text``, empty pieces included."""
    bounds = []
    start = 0
    while (comma := text.find(",", start)) >= 0:
        bounds.append((start, comma))
        start = comma + 1
    bounds.append((start, len(text)))
    return bounds


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.name = ""
        self.version: VersionSelector | None = None
        self.changes: dict[str, FeatureChange] = {}
        self.enforce = False

    def parse(self) -> Spec:
        if not self.text.strip():
            raise InvalidSpec("empty CPU spec", self.text, 0, len(self.text))
        (name_start, name_end), *items = _item_bounds(self.text)
        self.name = self._identifier(_token(self.text, name_start, name_end), "CPU model name")
        for start, end in items:
            self._item(start, end)
        return Spec(self.name, self.version, tuple(self.changes.values()), self.enforce)

    def _error(self, message: str, token: _Token) -> InvalidSpec:
        return InvalidSpec(message, self.text, token.start, token.end)

    def _item(self, start: int, end: int) -> None:
        item = _token(self.text, start, end)
        body = item.value
        if not body:
            raise InvalidSpec("empty item", self.text, start, end)
        if body[0] in "+-":
            name = self._feature_name(_token(self.text, item.start + 1, item.end))
            self._change(item, name, enabled=body[0] == "+")
        elif "=" in body:
            equals = self.text.index("=", item.start)
            key = _token(self.text, item.start, equals)
            value = _token(self.text, equals + 1, item.end)
            if key.value == "version":
                self._set_version(item, self._selector(value))
            elif key.value == "best":
                self._best(item, value)
            elif key.value == "enforce":
                raise self._error("enforce takes no value", item)
            else:
                if value.value not in _SWITCH and (option := option_like(key.value)):
                    raise self._error(f"unknown option {key.value!r} (did you mean {option}?)", key)
                name = self._feature_name(key)
                self._change(item, name, enabled=self._switch(name, value))
        elif body == "enforce":
            if self.enforce:
                raise self._error("enforce given twice", item)
            self.enforce = True
        else:
            option = option_like(body)
            hint = f" (did you mean {option}?)" if option == "enforce" else f": {_ITEM_HELP}"
            raise self._error(f"unknown item {body!r}{hint}", item)

    def _identifier(self, token: _Token, what: str) -> str:
        if not token.value:
            raise self._error(f"missing {what}", token)
        match = _IDENTIFIER.match(token.value)
        bad = match.end() if match else 0
        if bad < len(token.value):
            message = (
                f"bad character {token.value[bad]!r} in {what} {token.value!r}"
                if bad
                else f"{what} must start with a letter or digit"
            )
            raise InvalidSpec(message, self.text, token.start + bad)
        return token.value

    def _feature_name(self, token: _Token) -> str:
        name = self._identifier(token, "feature name").replace("_", "-")
        if name in _OPTIONS:
            raise self._error(f"{name!r} is an option, not a feature", token)
        return name

    def _switch(self, name: str, value: _Token) -> bool:
        if value.value not in _SWITCH:
            raise self._error(f"bad value {value.value!r} for {name!r}: use on or off", value)
        return _SWITCH[value.value]

    def _change(self, item: _Token, name: str, *, enabled: bool) -> None:
        if name in self.changes:
            raise self._error(f"feature {name!r} changed twice", item)
        self.changes[name] = FeatureChange(name, enabled)

    def _best(self, item: _Token, value: _Token) -> None:
        if value.value not in ("on", "off"):
            raise self._error(f"bad value {value.value!r} for best: use on or off", value)
        if value.value == "on":
            self._set_version(item, VersionSelector("best"))

    def _set_version(self, item: _Token, selector: VersionSelector) -> None:
        if self.version is not None:
            raise self._error("version given twice", item)
        if versioned := _VERSIONED_NAME.fullmatch(self.name):
            raise self._error(
                f"{self.name!r} already names a version: "
                f"drop {item.value!r} or use {versioned[1]!r}",
                item,
            )
        self.version = selector

    def _selector(self, token: _Token) -> VersionSelector:
        text = token.value
        if text == "best":
            return VersionSelector("best")
        if text == "latest":
            return VersionSelector("latest")
        if number := _NUMBER.fullmatch(text):
            digits = number[1]
            if not digits.strip("0"):
                raise self._error(f"version numbers start at 1, not {text!r}", token)
            if digits.startswith("0"):
                raise self._error(f"version number {text!r} has a leading zero", token)
            self._check_size(token, digits)
            return VersionSelector("number", number=int(digits))
        if release := _RELEASE.fullmatch(text):
            major, minor, micro = release.groups("0")
            self._check_size(token, major, minor, micro)
            return VersionSelector("release", release=(int(major), int(minor), int(micro)))
        raise self._error(f"unknown version selector {text!r}: {_SELECTOR_HELP}", token)

    def _check_size(self, token: _Token, *digits: str) -> None:
        if any(len(part) > _MAX_DIGITS for part in digits):
            raise self._error(f"number too large in version selector {token.value!r}", token)
