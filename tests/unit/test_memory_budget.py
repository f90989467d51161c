"""The memory budget: shares, reservations that grow and are released once."""

from __future__ import annotations

from execserver.local.memory import (
    MAX_MEMORY_BUDGET,
    MIN_MEMORY_BUDGET,
    ByteBudget,
    MemoryBudget,
    Reservation,
    default_memory_budget,
)


def test_default_budget_is_derived_from_the_machine_within_bounds() -> None:
    budget = default_memory_budget()
    assert MIN_MEMORY_BUDGET <= budget <= MAX_MEMORY_BUDGET
    shares = MemoryBudget.of(400)
    assert (shares.file_reads.limit, shares.http_bodies.limit, shares.stdin.limit) == (100,) * 3


def test_reservations_share_the_budget_and_give_it_back() -> None:
    budget = ByteBudget("test", 100)
    first, second = Reservation(budget), Reservation(budget)
    assert first.grow_to(60)
    assert not second.grow_to(50)  # only 40 left
    assert second.left() == 40 and second.size == 0
    assert second.grow_to(40)
    first.release()
    first.release()  # idempotent
    assert budget.used == 40


def test_a_released_reservation_grows_no_more() -> None:
    """A step still running on a thread after its request was given up holds nothing."""
    budget = ByteBudget("test", 100)
    reservation = Reservation(budget)
    assert reservation.grow_to(10)
    reservation.release()
    assert not reservation.grow_to(20)
    assert budget.used == 0
