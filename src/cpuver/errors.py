"""One exception tree for everything cpuver raises on purpose.

Every error a user can cause derives from :class:`CpuverError`, so the CLI and the web layer can
turn any of them into one clear line without a traceback. Errors about text a user typed
(:class:`InvalidSpec`) keep the text and the bad span, so the message can point at it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: cpuver's libvirt hook imports this and starts fast
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SHOWN_MAX = 60
"""Characters of a user's text quoted in an error; the rest is counted, never echoed."""
SPEC_CONTEXT = 40
"""Characters either side of the bad span a spec error shows of a long spec."""


def shown(text: object, limit: int = SHOWN_MAX) -> str:
    """``repr`` of ``text`` for an error message, cut after ``limit`` characters with the total
    counted: an error never echoes a huge input back, and control characters stay escaped."""
    if isinstance(text, str) and len(text) > limit:
        return f"{text[:limit]!r}... ({len(text):,} characters)"
    quoted = repr(text)
    if len(quoted) > limit + 2:
        return f"{quoted[:limit]}... ({len(quoted):,} characters)"
    return quoted


class CpuverError(Exception):
    """Base of every error cpuver raises on purpose."""


class InvalidSpec(CpuverError, ValueError):
    """A CPU spec string does not follow the grammar.

    ``start``/``end`` delimit the offending span of ``text`` (0-based, end exclusive);
    ``str()`` shows the text with a marker under that span.
    """

    def __init__(self, message: str, text: str, start: int, end: int | None = None) -> None:
        self.message = message
        self.text = text
        self.start = max(0, min(start, len(text)))
        self.end = max(self.start + 1, end if end is not None else self.start + 1)
        super().__init__(self.__str__())

    def excerpt(self, context: int = SPEC_CONTEXT) -> tuple[str, int, int]:
        """The part of the text around the bad span (all of it when short) and the span's
        start and end in that part: a long text is never shown whole."""
        if len(self.text) <= 2 * context:
            return self.text, self.start, self.end
        begin = max(0, self.start - context)
        stop = min(len(self.text), max(self.end, self.start + 1) + context)
        head = "..." if begin > 0 else ""
        tail = "..." if stop < len(self.text) else ""
        offset = len(head) - begin
        end = min(self.end, stop)
        return head + self.text[begin:stop] + tail, self.start + offset, end + offset

    def __str__(self) -> str:
        text, start, end = self.excerpt()
        marker = " " * start + "^" * max(1, end - start)
        return f"{self.message} (at position {self.start})\n    {text}\n    {marker}"


class UnknownName(CpuverError, LookupError):
    """A name was looked up that the catalog does not know; suggests close matches."""

    kind = "name"

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(f"unknown {self.kind} {shown(name)}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownModel(UnknownName):
    kind = "CPU model"


class UnknownVersion(UnknownName):
    kind = "CPU model version"


class UnknownMachineType(UnknownName):
    kind = "machine type"


class UnknownFeature(UnknownName):
    kind = "CPU feature"


class UnknownRelease(UnknownName):
    kind = "QEMU release"


class UnknownAccelerator(UnknownName):
    kind = "accelerator"


class CatalogError(CpuverError):
    """Catalog data (bundled, overlay or imported) is malformed or inconsistent.

    ``where`` names the file and the place inside it (e.g. ``Haswell.json: versions[3].added``).
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class HostError(CpuverError):
    """Host capabilities could not be read or are malformed."""


class HostNeeded(HostError):
    """An answer needs what a host offers and none was given. The message says what is needed,
    not how to give it: the CLI and the service each add their own way (``--host``, a request's
    ``host``)."""


class QemuError(CpuverError):
    """A QEMU process could not be started or answered a QMP command with an error."""


class NotRunnable(CpuverError):
    """No candidate version of a model can run on the given host.

    ``blockers`` maps each rejected version name to the features the host lacks; ``where``
    names the host ("host hv1", "pool rack3 (3 hosts)").
    """

    def __init__(
        self, spec: str, blockers: Mapping[str, Sequence[str]], where: str = "this host"
    ) -> None:
        self.spec = spec
        self.where = where
        self.blockers = {name: tuple(feats) for name, feats in blockers.items()}
        lines = [f"no version of {spec!r} can run on {where}:"]
        lines += [f"  {name}: missing {', '.join(feats)}" for name, feats in self.blockers.items()]
        super().__init__("\n".join(lines))
