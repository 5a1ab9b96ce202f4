"""The libvirt adapter: the only module that imports libvirt-python (``libvirt``, ``libvirt_qemu``).

A :class:`Connection` is opened like virsh's: ``--connect URI``, else ``LIBVIRT_DEFAULT_URI``,
else ``qemu:///system``. It reads and defines domains' persistent XML, answers the daemon's
versions, hostname and CPU model names, its ``domcapabilities``, and reads a running domain's
vCPU through libvirt's QEMU monitor passthrough (``qom-get`` on the vCPU object: every feature
property and the signature, as :func:`cpuver.host.launch.vcpu_definition` does over QMP).
libvirt errors become one-line :class:`LibvirtError` messages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt_qemu

import libvirt
from cpuver.errors import CpuverError

DEFAULT_URI = "qemu:///system"
_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE


class LibvirtError(CpuverError):
    """libvirt refused or failed a request (the message is libvirt's own, on one line)."""


def default_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


@contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as err:
        message = " ".join(str(err.get_error_message() or err).split())
        raise LibvirtError(f"{what}: {message}") from err


def _version(number: int) -> tuple[int, int, int]:
    return number // 1_000_000, number // 1000 % 1000, number % 1000


class Connection:
    """One connection to a libvirt daemon; close it (or use it as a context manager)."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = default_uri(uri)
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
        with _errors(f"cannot connect to {self.uri}"):
            self._conn = libvirt.open(self.uri)

    def close(self) -> None:
        with _errors(f"closing {self.uri}"):
            self._conn.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the daemon ------------------------------------------------------------------------------

    def libvirt_version(self) -> tuple[int, int, int]:
        """The daemon's libvirt release (``(11, 3, 0)``)."""
        with _errors(f"{self.uri}: libvirt version"):
            return _version(self._conn.getLibVersion())

    def qemu_version(self) -> tuple[int, int, int]:
        """The hypervisor's release as the daemon reports it (QEMU ``(10, 0, 2)``)."""
        with _errors(f"{self.uri}: hypervisor version"):
            return _version(self._conn.getVersion())

    def hostname(self) -> str:
        with _errors(f"{self.uri}: hostname"):
            return str(self._conn.getHostname())

    def cpu_model_names(self) -> frozenset[str]:
        """Every x86 CPU model name the daemon's CPU map knows."""
        with _errors(f"{self.uri}: CPU model names"):
            return frozenset(self._conn.getCPUModelNames("x86_64", 0))

    def domain_capabilities(self, virttype: str) -> str:
        """``virsh domcapabilities --virttype qemu|kvm`` (the daemon's default emulator)."""
        with _errors(f"{self.uri}: domcapabilities for {virttype}"):
            return str(self._conn.getDomainCapabilities(None, "x86_64", None, virttype, 0))

    # -- domains ---------------------------------------------------------------------------------

    def _domain(self, name: str) -> Any:
        with _errors(f"{self.uri}: domain {name!r}"):
            return self._conn.lookupByName(name)

    def domain_xml(self, name: str, *, live: bool = False) -> str:
        """The domain's persistent definition (``dumpxml --inactive``), or the live one."""
        domain = self._domain(name)
        with _errors(f"{self.uri}: XML of domain {name!r}"):
            return str(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE if live else _INACTIVE))

    def domain_xmls(self, names: Iterable[str]) -> Iterator[tuple[str, str]]:
        for name in names:
            yield name, self.domain_xml(name)

    def define(self, xml: str) -> None:
        """virDomainDefineXML: the new persistent definition (a running domain keeps its own
        until its next cold boot)."""
        with _errors(f"{self.uri}: defining a domain"):
            self._conn.defineXML(xml)

    def is_active(self, name: str) -> bool:
        domain = self._domain(name)
        with _errors(f"{self.uri}: state of domain {name!r}"):
            return bool(domain.isActive())

    def _monitor(self, domain: Any, name: str, command: str, **arguments: Any) -> Any:
        """One QMP command through libvirt's monitor passthrough; its ``return`` value."""
        request = json.dumps({"execute": command, "arguments": arguments})
        with _errors(f"{self.uri}: QEMU monitor of domain {name!r} ({command})"):
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(domain, request, 0))
        if "error" in reply:
            raise LibvirtError(f"{name}: QEMU answered {command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def vcpu(
        self, name: str, features: Iterable[str], signature: Iterable[str]
    ) -> tuple[frozenset[str], dict[str, Any]]:
        """The running vCPU 0: which of ``features`` it has on, and its ``signature`` fields
        (QEMU property names; those the vCPU object has), each read with ``qom-get``."""
        domain = self._domain(name)
        cpus = self._monitor(domain, name, "query-cpus-fast")
        if not cpus:
            raise LibvirtError(f"domain {name!r} has no vCPU (is it running?)")
        path = cpus[0]["qom-path"]

        def get(prop: str) -> Any:
            return self._monitor(domain, name, "qom-get", path=path, property=prop)

        present = {item["name"] for item in self._monitor(domain, name, "qom-list", path=path)}
        enabled = frozenset(f for f in features if f in present and get(f) is True)
        return enabled, {field: get(field) for field in signature if field in present}
