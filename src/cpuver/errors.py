"""One exception tree for everything cpuver raises on purpose.

Every error a user can cause derives from :class:`CpuverError`, so the CLI and the web layer can
turn any of them into one clear line without a traceback. Errors about text a user typed
(:class:`InvalidSpec`) keep the text and the bad span, so the message can point at it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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

    def __str__(self) -> str:
        marker = " " * self.start + "^" * (self.end - self.start)
        return f"{self.message} (at position {self.start})\n    {self.text}\n    {marker}"


class UnknownName(CpuverError, LookupError):
    """A name was looked up that the catalog does not know; suggests close matches."""

    kind = "name"

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(f"unknown {self.kind} {name!r}{hint}")

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
