"""Read QEMU's QMP replies about a host, as a management layer keeps them.

Accepted: one reply (``{"return": {"model": ...}}`` or just ``{"model": ...}``), a JSON array of
messages, or messages one after another as libvirt records a QMP session
(``tests/qemucapabilitiesdata/*.replies``: each command, then its reply). What counts:

* ``query-cpu-model-expansion`` of ``host`` or ``max``, ``static`` or ``full``, with
  ``migratable`` on or off. A static reply names its model ``base``: with the command before it,
  the command says which model was asked; alone, the accelerator is KVM exactly when a KVM
  paravirtual feature is on (QEMU clears them all without KVM);
* ``query-cpu-definitions`` (every name's ``unavailable-features`` and ``alias-of``);
* ``query-version`` or the greeting (which QEMU release answered), ``query-kvm``.

Messages between a greeting or ``qmp_capabilities`` and the next are one QEMU process, so one
accelerator: KVM when it was asked about ``host`` or ``query-kvm`` says KVM is enabled, TCG when it
was asked about ``max``. Everything else is ignored. Errors name the message (``host.replies:
message 12: ...``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cpuver.documents import UnreadableDocument, json_values
from cpuver.errors import HostError
from cpuver.features import FeatureTable
from cpuver.host.evidence import AccelEvidence, Expansion, QemuEvidence, signature_facts

FORM = "QMP replies"
_MODEL_ACCEL = {"host": "kvm", "max": "tcg"}


def messages(text: str, source: str) -> list[dict[str, Any]]:
    """The JSON objects of ``text``: one, an array of them, or several one after another."""
    try:
        found = json_values(text, source)
    except UnreadableDocument as err:
        raise HostError(str(err)) from err
    if len(found) == 1 and isinstance(found[0], list):
        found = found[0]
    if not found:
        raise HostError(f"{source}: empty: expected QEMU's QMP replies")
    for index, item in enumerate(found):
        if not isinstance(item, dict):
            raise HostError(f"{source}: message {index + 1}: expected a JSON object")
    return found


def looks_like_replies(data: Any) -> bool:
    """Whether parsed JSON is QMP messages rather than a cpuver snapshot."""
    if isinstance(data, list):
        return True
    if not isinstance(data, dict) or "schema" in data:
        return False
    return bool({"return", "execute", "QMP", "model"} & set(data))


@dataclass
class _Session:
    accel: str | None = None
    expansions: list[Expansion] = field(default_factory=list)
    definitions: list[Mapping[str, Any]] | None = None
    asked: set[str] = field(default_factory=set)


def read(text: str, source: str, table: FeatureTable | None = None) -> QemuEvidence:
    """The evidence of a file of QMP replies."""
    return from_messages(messages(text, source), source, table)


def from_messages(
    found: Sequence[Mapping[str, Any]], source: str, table: FeatureTable | None = None
) -> QemuEvidence:
    table = table or FeatureTable.bundled()
    sessions: list[_Session] = [_Session()]
    release: str | None = None
    build: str | None = None
    for index, command, reply in _exchanges(found):
        where = f"{source}: message {index + 1}"
        if "QMP" in reply or (command or {}).get("execute") == "qmp_capabilities":
            if sessions[-1].expansions or sessions[-1].definitions is not None:
                sessions.append(_Session())
            version = reply.get("QMP", {}).get("version") if "QMP" in reply else None
            if isinstance(version, dict):
                release, build = _version(version, where) or (release, build)
            continue
        if "error" in reply or "event" in reply:
            continue
        value = reply.get("return", reply if "model" in reply else None)
        name = (command or {}).get("execute")
        arguments = (command or {}).get("arguments") or {}
        if name == "query-version" or (name is None and _is_version(value)):
            release, build = _version(value, where) or (release, build)
        elif name == "query-kvm" and isinstance(value, dict) and value.get("enabled") is True:
            sessions[-1].accel = "kvm"
        elif (
            isinstance(value, dict)
            and "model" in value
            and name
            in (
                None,
                "query-cpu-model-expansion",
            )
        ):
            expansion = _expansion(value["model"], arguments, where, table)
            session = sessions[-1]
            session.expansions.append(expansion)
            session.asked.add(expansion.model)
        elif (
            isinstance(value, list)
            and name in (None, "query-cpu-definitions")
            and all(isinstance(entry, dict) and "name" in entry for entry in value)
        ):
            sessions[-1].definitions = value
    accels: dict[str, AccelEvidence] = {}
    facts: dict[str, Any] = {}
    for session in sessions:
        if not session.expansions and session.definitions is None:
            continue
        accel = session.accel or _accel_of(session, source)
        evidence = _accel_evidence(accel, session, source)
        if accel in accels:
            before = accels[accel]
            evidence = AccelEvidence(
                accel,
                before.expansions + evidence.expansions,
                evidence.definitions if evidence.definitions is not None else before.definitions,
                {**before.aliases, **evidence.aliases},
            )
        accels[accel] = evidence
        if accel == "kvm" or not facts:
            for expansion in evidence.expansions:
                facts = signature_facts(expansion.props) or facts
    if not accels:
        raise HostError(
            f"{source}: no query-cpu-model-expansion or query-cpu-definitions reply: nothing "
            "says what the host offers"
        )
    for accel, evidence in accels.items():
        if not evidence.expansions:
            raise HostError(
                f"{source}: {accel}: query-cpu-definitions alone does not say what the host "
                "offers: give the expansion of host (KVM) or max (TCG) too"
            )
    return QemuEvidence(source, release, build, accels, FORM, facts)


def _exchanges(
    found: Sequence[Mapping[str, Any]],
) -> Iterator[tuple[int, Mapping[str, Any] | None, Mapping[str, Any]]]:
    """Each reply with the command it answers (None when the file has no commands)."""
    command: Mapping[str, Any] | None = None
    for index, message in enumerate(found):
        if "execute" in message:
            command = message
            if message.get("execute") == "qmp_capabilities":
                yield index, message, {}
            continue
        yield index, command, message
        command = None


def _is_version(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("qemu"), dict)


def _version(value: Any, where: str) -> tuple[str, str] | None:
    if not _is_version(value):
        return None
    qemu = value["qemu"]
    try:
        major, minor, micro = int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"])
    except (KeyError, TypeError, ValueError):
        raise HostError(f"{where}: version: expected major, minor and micro numbers") from None
    package = value.get("package")
    build = f"QEMU {major}.{minor}.{micro}" + (f" ({package.strip()})" if package else "")
    return f"{major}.{minor}", build


def _expansion(
    model: Any, arguments: Mapping[str, Any], where: str, table: FeatureTable
) -> Expansion:
    if not isinstance(model, dict) or not isinstance(model.get("props"), dict):
        raise HostError(f"{where}: model.props: expected an object of CPU properties")
    given = arguments.get("model")
    asked: dict[str, Any] = given if isinstance(given, dict) else {}
    name = str(asked.get("name") or model.get("name") or "")
    kind = str(arguments.get("type") or ("static" if model.get("name") == "base" else "full"))
    props: dict[str, Any] = model["props"]
    given_props = asked.get("props")
    asked_props: dict[str, Any] = given_props if isinstance(given_props, dict) else {}
    migratable = asked_props.get("migratable", props.get("migratable"))
    if migratable is None and asked:
        migratable = True  # QEMU's default for host and max
    if name not in ("host", "max", "base"):
        raise HostError(
            f"{where}: model.name: expected an expansion of host (KVM) or max (TCG), got {name!r}"
        )
    return Expansion(name, kind, migratable if isinstance(migratable, bool) else None, props)


def _accel_of(session: _Session, source: str) -> str:
    models = session.asked - {"base"}
    if len(models) == 1:
        return _MODEL_ACCEL[models.pop()]
    if models:
        raise HostError(f"{source}: one QEMU was asked about both host and max")
    # A lone static reply: QEMU clears every KVM paravirtual feature unless KVM runs.
    table = FeatureTable.bundled()
    kvm_features = {
        name
        for name in table
        if (loc := table.get(name).location) is not None and loc.word == "FEAT_KVM"
    }
    for expansion in session.expansions:
        if any(expansion.props.get(name) is True for name in kvm_features):
            return "kvm"
    return "tcg"


def _accel_evidence(accel: str, session: _Session, source: str) -> AccelEvidence:
    definitions = None
    aliases: dict[str, str] = {}
    if session.definitions is not None:
        definitions = {}
        for entry in session.definitions:
            name = str(entry["name"])
            unavailable = entry.get("unavailable-features", [])
            if not isinstance(unavailable, list):
                raise HostError(f"{source}: {name}: unavailable-features: expected a list")
            definitions[name] = tuple(str(f) for f in unavailable)
            if isinstance(entry.get("alias-of"), str):
                aliases[name] = entry["alias-of"]
    return AccelEvidence(accel, tuple(session.expansions), definitions, aliases)
