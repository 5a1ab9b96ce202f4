"""A termination request (SIGTERM) waits for the exchange with QEMU under way, never cuts it."""

from __future__ import annotations

import pytest

from cpuver.host import termination


class Ended(Exception):
    pass


def end() -> None:
    raise Ended


def test_a_request_outside_an_exchange_ends_at_once() -> None:
    with pytest.raises(Ended):
        termination.request(end)


def test_a_request_during_an_exchange_ends_when_the_exchange_is_over() -> None:
    finished = []
    with pytest.raises(Ended), termination.exchange():
        termination.request(end)
        finished.append("exchange")
    assert finished == ["exchange"]


def test_a_request_in_a_nested_exchange_waits_for_the_outermost() -> None:
    steps = []
    with pytest.raises(Ended), termination.exchange():
        with termination.exchange():
            termination.request(end)
        steps.append("outer part")
    assert steps == ["outer part"]
