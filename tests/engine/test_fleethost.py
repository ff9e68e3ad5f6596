"""One host's bookkeeping in a worker: which slots given back are reused here, and which go back to Redis."""

from __future__ import annotations

from jobs.engine.fleethost import CONTENDED_SECONDS, HANDOFF_MAX, FleetHost, SlotKind
from jobs.engine.fleetscripts import host_keys

PLAIN = SlotKind(limit=4, interval=0.0, adaptive=False)
NOW = 100.0


def contended(host: FleetHost) -> FleetHost:
    host.contended_until = NOW + CONTENDED_SECONDS
    return host


def test_keys_are_those_of_the_scripts() -> None:
    assert FleetHost("example.test:80", "p").keys == host_keys("example.test:80", "p")


def test_an_uncontended_slot_is_kept_for_the_next_request_here() -> None:
    host = FleetHost("h:80", "p")
    assert host.reuse("a", PLAIN, NOW)  # nobody waits, nobody else wants the host: kept
    assert host.take_gift(PLAIN) == "a"
    assert host.gifts == 0  # keeping is not a hand-over run


def test_while_others_want_the_host_a_slot_goes_only_to_a_waiter_here_and_idle_ones_go_back() -> None:
    host = contended(FleetHost("h:80", "p"))
    assert not host.reuse("a", PLAIN, NOW)  # no waiter here: back to Redis
    host.demand[PLAIN] = 1
    assert not host.reuse("b", SlotKind(limit=2, interval=0.0, adaptive=False), NOW)  # another kind
    assert host.reuse("c", PLAIN, NOW) and host.wake.is_set()
    assert not host.reuse("d", PLAIN, NOW)  # the one waiter already has a slot in the pool
    assert host.idle() == []  # the pooled slot is the waiter's
    host.demand[PLAIN] = 0
    assert host.idle() == ["c"] and not host.pool
    assert not host.contended(NOW + CONTENDED_SECONDS)


def test_never_reuses_what_redis_must_decide() -> None:
    host = FleetHost("h:80", "p")
    paced, adaptive = SlotKind(4, 0.5, False), SlotKind(4, 0.0, True)
    host.demand.update({paced: 1, adaptive: 1})
    assert not host.reuse("a", paced, NOW)  # the pace is kept in Redis
    assert not host.reuse("b", adaptive, NOW)  # and so is the adaptive limit


def test_a_contended_run_of_hand_overs_ends_at_handoff_max() -> None:
    host = contended(FleetHost("h:80", "p"))
    host.demand[PLAIN] = HANDOFF_MAX + 1
    assert all(host.reuse(f"s{n}", PLAIN, NOW) for n in range(HANDOFF_MAX))
    assert not host.reuse("last", PLAIN, NOW)


def test_uncontended_hand_overs_have_no_limit() -> None:
    host = FleetHost("h:80", "p")
    host.demand[PLAIN] = 3 * HANDOFF_MAX
    assert all(host.reuse(f"s{n}", PLAIN, NOW) for n in range(3 * HANDOFF_MAX))


def test_gifts_are_taken_by_kind_in_order_and_still_renewed() -> None:
    host = FleetHost("h:80", "p")
    other = SlotKind(2, 0.0, False)
    host.reuse("a", PLAIN, NOW)
    host.reuse("b", other, NOW)
    host.reuse("c", PLAIN, NOW)
    host.holders.append(("d", PLAIN))
    assert sorted(host.holder_names) == ["a", "b", "c", "d"]
    assert host.take_gift(PLAIN) == "a"
    assert host.take_gift(PLAIN) == "c"
    assert host.take_gift(PLAIN) is None
    assert host.take_gift(other) == "b"
    assert host.held == 1
