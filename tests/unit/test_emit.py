"""What we hand to QEMU (-cpu) builds exactly the resolved definition (libvirt XML: see
test_emit_libvirt.py)."""

from __future__ import annotations

import dataclasses

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.emit.qemu import cpu_arg
from cpuver.models import Definition, Delta
from cpuver.resolve import Resolution, Resolver


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


def resolve(catalog: Catalog, spec: str, machine: str = "pc-q35-10.0") -> Resolution:
    """Under KVM without a host: nothing is missing, so enforce never refuses."""
    return Resolver(catalog, machine=machine, accel="kvm").resolve(spec)


def parse_cpu_arg(arg: str) -> tuple[str, Delta, bool]:
    """Read a -cpu argument back: the model, its property changes and enforce."""
    model, *props = arg.split(",")
    on, off, signature = set(), set(), []
    enforce = False
    for prop in props:
        if prop == "enforce":
            enforce = True
            continue
        key, value = prop.split("=", 1)
        if value == "on":
            on.add(key)
        elif value == "off":
            off.add(key)
        else:
            signature.append((key, int(value) if value.isdigit() else value))
    return model, Delta(frozenset(on), frozenset(off), tuple(signature)), enforce


def applied(catalog: Catalog, arg: str, machine: str = "pc-q35-10.0") -> Definition:
    """The definition QEMU builds from ``-cpu arg``: the named version, then the properties."""
    model, delta, _enforce = parse_cpu_arg(arg)
    return resolve(catalog, model, machine).definition.apply(delta)


# ------------------------------------------------------------------------------ qemu -cpu


def test_cpu_arg_is_the_version_then_features_on_then_off_then_enforce(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell-v4,-pcid,+pdpe1gb,+avx512f,enforce")
    assert cpu_arg(resolution) == "Haswell-v4,avx512f=on,pdpe1gb=on,pcid=off,enforce"


def test_cpu_arg_of_a_plain_version_is_its_name(q10: Catalog) -> None:
    assert cpu_arg(resolve(q10, "Haswell-v4")) == "Haswell-v4"


def test_cpu_arg_leaves_out_changes_the_version_already_has(q10: Catalog) -> None:
    """Haswell-v4 already enables pcid, so pcid=on would change nothing."""
    assert cpu_arg(resolve(q10, "Haswell-v4,pcid=on,enforce")) == "Haswell-v4,enforce"


def test_cpu_arg_names_the_version_for_a_bare_name(q10: Catalog) -> None:
    assert cpu_arg(resolve(q10, "Haswell")) == "Haswell-v1"


def test_cpu_arg_of_a_revision_sets_its_compat_changes_on_the_version(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell,version=2.4.0")
    assert resolution.name == "Haswell-2.4.0"
    assert cpu_arg(resolution) == "Haswell-v1,stepping=1,abm=off"


def test_cpu_arg_of_a_revision_rebuilds_the_revision_from_its_version(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell,version=2.4.0")
    assert applied(q10, cpu_arg(resolution)) == resolution.definition


def test_cpu_arg_of_every_bare_name_under_every_machine_type_rebuilds_it(
    q10: Catalog,
) -> None:
    """Under the machine type it was resolved for, -cpu <arg> builds exactly the definition."""
    wrong = []
    for machine in q10.machines:
        for model in q10.models:
            resolution = resolve(q10, model, machine)
            if applied(q10, cpu_arg(resolution), machine) != resolution.definition:
                wrong.append((machine, model))
    assert wrong == []


def test_cpu_arg_of_a_changed_signature_rebuilds_it(q10: Catalog) -> None:
    resolution = resolve(q10, "qemu64", machine="pc-q35-5.0")
    assert cpu_arg(resolution) == "qemu64-v1,family=6,model=6,stepping=3"
    assert applied(q10, cpu_arg(resolution), "pc-q35-5.0") == resolution.definition


def test_cpu_arg_escapes_commas_in_a_model_id(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell-v1")
    renamed = dataclasses.replace(
        resolution, changes=Delta(signature=(("model-id", "Haswell, renamed"),))
    )
    assert cpu_arg(renamed) == "Haswell-v1,model-id=Haswell,, renamed"
