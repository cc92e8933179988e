"""The delivery ledger in-process, with a fake clock: every transition, and a failure
between any two of them, without a worker process or Redis."""

from __future__ import annotations

import pytest

from service.tasks.ledger import DeliveryLedger, DeliveryState, LedgerError
from service.tasks.task_format import Task

LEASE_MAX_S = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> DeliveryLedger:
    return DeliveryLedger(lease_max_s=LEASE_MAX_S, clock=clock)


def task(entry_id: str) -> Task:
    return Task(job_id="job", chunk_id=entry_id, content="x", message_id=entry_id)


def test_the_happy_path_received_running_finished_acking_acked(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0"])
    assert ledger.state_of("1-0") is DeliveryState.RECEIVED and ledger.in_flight() == 1
    assert ledger.start("1-0")
    assert ledger.state_of("1-0") is DeliveryState.RUNNING and ledger.in_flight() == 1
    assert ledger.finish("1-0", task("1-0"))
    # A finished task frees its slot at once; its ack waits for the next round trip.
    assert ledger.state_of("1-0") is DeliveryState.FINISHED and ledger.in_flight() == 0
    assert ledger.has_acks_to_send()
    assert [entry_id for entry_id, _ in ledger.sending_acks()] == ["1-0"]
    assert ledger.state_of("1-0") is DeliveryState.ACKING
    assert not ledger.has_acks_to_send()
    ledger.acked(["1-0"])
    assert ledger.state_of("1-0") is None and len(ledger) == 0


def test_an_ack_in_flight_is_neither_sent_twice_nor_renewed(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0", "2-0"])
    for entry_id in ("1-0", "2-0"):
        ledger.start(entry_id)
        ledger.finish(entry_id, task(entry_id))
    assert len(ledger.sending_acks()) == 2
    assert ledger.sending_acks() == []
    assert ledger.renewable() == []


def test_a_failed_ack_goes_again_and_stays_unrenewed(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0"])
    ledger.start("1-0")
    ledger.finish("1-0", task("1-0"))
    ledger.sending_acks()
    ledger.ack_failed(["1-0"])
    assert ledger.state_of("1-0") is DeliveryState.FINISHED
    # If the failed ack did land, a renewal would take the task for another worker's.
    assert ledger.renewable() == []
    assert [entry_id for entry_id, _ in ledger.sending_acks()] == ["1-0"]
    ledger.acked(["1-0"])
    assert len(ledger) == 0


@pytest.mark.parametrize("from_state", ["received", "running"])
def test_a_move_takes_the_delivery_out_once_it_lands(
    ledger: DeliveryLedger, from_state: str
) -> None:
    ledger.receive(["1-0"])
    if from_state == "running":
        ledger.start("1-0")
    assert ledger.moving("1-0")
    assert ledger.state_of("1-0") is DeliveryState.MOVING
    # Still held while the move is written: renewed, and taking its slot.
    assert ledger.renewable() == ["1-0"] and ledger.in_flight() == 1
    ledger.moved("1-0")
    assert len(ledger) == 0 and ledger.in_flight() == 0


def test_a_failed_move_releases_the_delivery_for_reclaim(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0"])
    ledger.start("1-0")
    ledger.moving("1-0")
    ledger.release(["1-0"])
    assert ledger.renewable() == [] and len(ledger) == 0


@pytest.mark.parametrize("lost_while", ["received", "running", "finished"])
def test_a_delivery_lost_to_another_worker_is_never_started_finished_or_acked(
    ledger: DeliveryLedger, lost_while: str
) -> None:
    ledger.receive(["1-0"])
    if lost_while in ("running", "finished"):
        ledger.start("1-0")
    if lost_while == "finished":
        ledger.finish("1-0", task("1-0"))
    assert ledger.mark_lost(["1-0"]) == ["1-0"]
    assert ledger.is_lost("1-0")
    assert ledger.renewable() == []
    if lost_while == "received":
        assert not ledger.start("1-0")
    elif lost_while == "running":
        assert not ledger.finish("1-0", task("1-0"))
    else:
        assert ledger.sending_acks() == []
    assert len(ledger) == 0


def test_a_lost_delivery_is_not_moved(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0"])
    ledger.start("1-0")
    ledger.mark_lost(["1-0"])
    assert not ledger.moving("1-0")
    assert len(ledger) == 0


def test_a_lost_task_delivered_again_is_ours_again(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0"])
    ledger.mark_lost(["1-0"])
    ledger.receive(["1-0"])
    assert ledger.start("1-0")


def test_an_ack_in_flight_cannot_be_marked_lost(ledger: DeliveryLedger) -> None:
    # A renewal that listed the task before its ack landed finds it acked, not stolen.
    ledger.receive(["1-0"])
    ledger.start("1-0")
    ledger.finish("1-0", task("1-0"))
    listed = ledger.renewable()
    ledger.sending_acks()
    assert ledger.mark_lost(listed) == []
    assert ledger.state_of("1-0") is DeliveryState.ACKING


def test_renewal_stops_lease_max_after_receipt(ledger: DeliveryLedger, clock: FakeClock) -> None:
    ledger.receive(["1-0"])
    ledger.start("1-0")
    clock.now += LEASE_MAX_S
    assert ledger.renewable() == ["1-0"]
    clock.now += 0.001
    # A handler that hangs for ever lets another worker take its task.
    assert ledger.renewable() == []
    assert ledger.state_of("1-0") is DeliveryState.RUNNING


def test_release_lets_go_of_whatever_was_not_started(ledger: DeliveryLedger) -> None:
    ledger.receive(["1-0", "2-0", "3-0"])
    ledger.start("1-0")
    ledger.release(["2-0", "3-0"])
    assert ledger.renewable() == ["1-0"] and ledger.in_flight() == 1


@pytest.mark.parametrize(
    ("prepare", "transition"),
    [
        ("received", lambda ledger: ledger.finish("1-0", task("1-0"))),
        ("running", lambda ledger: ledger.start("1-0")),
        ("finished", lambda ledger: ledger.start("1-0")),
        ("finished", lambda ledger: ledger.moving("1-0")),
        ("acking", lambda ledger: ledger.finish("1-0", task("1-0"))),
        ("running", lambda ledger: ledger.ack_failed(["1-0"])),
    ],
)
def test_a_transition_the_state_does_not_allow_is_a_ledger_error(
    ledger: DeliveryLedger, prepare: str, transition: object
) -> None:
    ledger.receive(["1-0"])
    if prepare in ("running", "finished", "acking"):
        ledger.start("1-0")
    if prepare in ("finished", "acking"):
        ledger.finish("1-0", task("1-0"))
    if prepare == "acking":
        ledger.sending_acks()
    with pytest.raises(LedgerError):
        transition(ledger)  # type: ignore[operator]
