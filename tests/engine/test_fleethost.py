"""One host's bookkeeping in a worker: which releases are handed over to a waiter here, and in what order."""

from __future__ import annotations

from jobs.engine.fleethost import HANDOFF_MAX, FleetHost, SlotKind
from jobs.engine.fleetscripts import host_keys

PLAIN = SlotKind(limit=4, interval=0.0, adaptive=False)


def test_keys_are_those_of_the_scripts() -> None:
    assert FleetHost("example.test:80", "p").keys == host_keys("example.test:80", "p")


def test_hands_over_only_to_a_waiter_of_the_same_kind_not_yet_served() -> None:
    host = FleetHost("h:80", "p")
    assert not host.can_hand_over(PLAIN)  # nobody waits here
    host.demand[PLAIN] = 1
    assert not host.can_hand_over(SlotKind(limit=2, interval=0.0, adaptive=False))  # another limit
    assert host.can_hand_over(PLAIN)
    host.hand_over("a", PLAIN)
    assert host.wake.is_set()
    assert not host.can_hand_over(PLAIN)  # the one waiter already has a slot in the pool


def test_never_hands_over_what_redis_must_decide() -> None:
    host = FleetHost("h:80", "p")
    paced, adaptive = SlotKind(4, 0.5, False), SlotKind(4, 0.0, True)
    host.demand.update({paced: 1, adaptive: 1})
    assert not host.can_hand_over(paced)  # the pace is kept in Redis
    assert not host.can_hand_over(adaptive)  # and so is the adaptive limit


def test_a_run_of_hand_overs_ends_at_handoff_max() -> None:
    host = FleetHost("h:80", "p")
    host.demand[PLAIN] = HANDOFF_MAX + 1
    for n in range(HANDOFF_MAX):
        host.hand_over(f"s{n}", PLAIN)
    assert not host.can_hand_over(PLAIN)


def test_gifts_are_taken_by_kind_in_order_and_still_renewed() -> None:
    host = FleetHost("h:80", "p")
    other = SlotKind(2, 0.0, False)
    host.demand.update({PLAIN: 2, other: 1})
    host.hand_over("a", PLAIN)
    host.hand_over("b", other)
    host.hand_over("c", PLAIN)
    host.holders.append(("d", PLAIN))
    assert sorted(host.holder_names) == ["a", "b", "c", "d"]
    assert host.take_gift(PLAIN) == "a"
    assert host.take_gift(PLAIN) == "c"
    assert host.take_gift(PLAIN) is None
    assert host.take_gift(other) == "b"
    assert host.held == 1
