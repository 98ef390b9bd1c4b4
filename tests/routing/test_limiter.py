from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import RateLimitError
from modelyard.routing.limiter import ModelLimiter, Slot

GUARD_S = 5.0  # liveness guard only: a hang fails the test instead of blocking the suite


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(
    *,
    max_concurrency: int | None = None,
    max_queue: int = 100,
    queue_timeout_s: float = 10.0,
    rpm: int | None = None,
    tpm: int | None = None,
    clock: FakeClock | None = None,
) -> ModelLimiter:
    return ModelLimiter(
        "gpt-test",
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        queue_timeout_s=queue_timeout_s,
        rpm=rpm,
        tpm=tpm,
        clock=clock or FakeClock(),
    )


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- no limits ----------------------------------------------------------------------------------


async def test_unlimited_always_grants() -> None:
    lim = limiter()
    slots = [lim.try_acquire(10**9) for _ in range(1000)]
    assert all(isinstance(s, Slot) for s in slots)
    assert lim.in_flight == 1000
    assert lim.has_capacity(10**9)
    assert lim.retry_after() == 0.0
    slot = await lim.acquire(5)
    assert lim.in_flight == 1001
    slot.release(3)
    for s in slots:
        assert s is not None
        s.release()
    assert lim.in_flight == 0
    snap = lim.snapshot()
    assert snap["in_flight"] == 0
    assert snap["queue_length"] == 0
    assert snap["max_concurrency"] is None
    assert snap["rpm_used"] is None and snap["tpm_used"] is None


async def test_release_is_idempotent() -> None:
    lim = limiter(max_concurrency=2)
    a = lim.try_acquire()
    b = lim.try_acquire()
    assert a is not None and b is not None
    a.release()
    a.release()
    a.release(100)
    assert a.released
    assert lim.in_flight == 1
    b.release()
    assert lim.in_flight == 0


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        limiter(max_concurrency=0)
    with pytest.raises(ValueError):
        limiter(max_queue=-1)
    with pytest.raises(ValueError):
        limiter(rpm=0)
    with pytest.raises(ValueError):
        limiter(tpm=0)


# -- concurrency and queue --------------------------------------------------------------------


async def test_try_acquire_respects_max_concurrency() -> None:
    lim = limiter(max_concurrency=2)
    a, b = lim.try_acquire(), lim.try_acquire()
    assert a is not None and b is not None
    assert lim.try_acquire() is None
    assert not lim.has_capacity()
    assert lim.retry_after() > 0
    a.release()
    assert lim.has_capacity()
    c = lim.try_acquire()
    assert c is not None
    assert lim.in_flight == 2


async def test_acquire_waits_for_a_release() -> None:
    lim = limiter(max_concurrency=1)
    held = lim.try_acquire()
    assert held is not None
    task = asyncio.create_task(lim.acquire())
    await settle()
    assert not task.done()
    assert lim.queue_length == 1
    held.release()
    slot = await asyncio.wait_for(task, GUARD_S)
    assert lim.in_flight == 1
    assert lim.queue_length == 0
    slot.release()
    assert lim.in_flight == 0


async def test_waiters_are_served_in_fifo_order() -> None:
    lim = limiter(max_concurrency=1)
    held = lim.try_acquire()
    assert held is not None
    order: list[int] = []

    async def worker(i: int) -> None:
        slot = await lim.acquire()
        order.append(i)
        await asyncio.sleep(0)
        slot.release()

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)
    assert lim.queue_length == 10
    held.release()
    await asyncio.wait_for(asyncio.gather(*tasks), GUARD_S)
    assert order == list(range(10))
    assert lim.in_flight == 0


async def test_no_barging_past_waiters() -> None:
    lim = limiter(max_concurrency=1)
    held = lim.try_acquire()
    assert held is not None
    task = asyncio.create_task(lim.acquire())
    await settle()
    held.release()
    # the freed slot went to the waiter, even though it has not run yet
    assert lim.try_acquire() is None
    assert not lim.has_capacity()
    slot = await asyncio.wait_for(task, GUARD_S)
    slot.release()
    assert lim.has_capacity()


async def test_try_acquire_fails_while_others_are_queued_even_with_rate_room() -> None:
    clock = FakeClock()
    lim = limiter(max_concurrency=2, rpm=2, clock=clock)
    a, b = lim.try_acquire(), lim.try_acquire()
    assert a is not None and b is not None
    task = asyncio.create_task(lim.acquire())
    await settle()
    assert lim.queue_length == 1
    clock.advance(60)
    a.release()  # the waiter takes it
    assert lim.try_acquire() is None
    (await asyncio.wait_for(task, GUARD_S)).release()
    b.release()


async def test_no_barging_past_a_rate_blocked_waiter() -> None:
    clock = FakeClock()
    lim = limiter(tpm=100, queue_timeout_s=2, clock=clock)
    first = lim.try_acquire(80)
    assert first is not None
    clock.advance(59.9)
    big = asyncio.create_task(lim.acquire(60))  # needs the first reservation to leave the window
    await settle()
    assert lim.queue_length == 1
    # a small request would fit the window, but it must not overtake the queued one
    assert not lim.has_capacity(10)
    assert lim.try_acquire(10) is None
    clock.advance(1)
    slot = await asyncio.wait_for(big, GUARD_S)
    assert lim.snapshot()["tpm_used"] == 60
    first.release()
    slot.release()


async def test_queue_full_raises_immediately() -> None:
    lim = limiter(max_concurrency=1, max_queue=1)
    held = lim.try_acquire()
    assert held is not None
    waiting = asyncio.create_task(lim.acquire())
    await settle()
    with pytest.raises(RateLimitError) as info:
        await asyncio.wait_for(lim.acquire(), GUARD_S)
    err = info.value
    assert "gpt-test" in err.message
    assert "queue full" in err.message
    assert "max_concurrency" in err.message
    assert err.retry_after is not None and err.retry_after > 0
    assert err.headers()["Retry-After"]
    held.release()
    (await asyncio.wait_for(waiting, GUARD_S)).release()


async def test_max_queue_zero_means_no_waiting() -> None:
    lim = limiter(max_concurrency=1, max_queue=0)
    held = lim.try_acquire()
    assert held is not None
    with pytest.raises(RateLimitError, match="queue full"):
        await asyncio.wait_for(lim.acquire(), GUARD_S)
    assert lim.queue_length == 0


async def test_queue_timeout() -> None:
    lim = limiter(max_concurrency=1, queue_timeout_s=0.05)
    held = lim.try_acquire()
    assert held is not None
    with pytest.raises(RateLimitError) as info:
        await asyncio.wait_for(lim.acquire(), GUARD_S)
    assert "gpt-test" in info.value.message
    assert "max_concurrency" in info.value.message
    assert info.value.retry_after is not None
    assert lim.queue_length == 0
    assert lim.in_flight == 1
    held.release()
    assert lim.in_flight == 0
    assert lim.has_capacity()


async def test_timeout_argument_shortens_the_wait() -> None:
    lim = limiter(max_concurrency=1, queue_timeout_s=3600)
    held = lim.try_acquire()
    assert held is not None
    with pytest.raises(RateLimitError):
        await asyncio.wait_for(lim.acquire(timeout=0.02), GUARD_S)
    assert lim.queue_length == 0
    held.release()


async def test_zero_timeout_fails_at_once() -> None:
    lim = limiter(max_concurrency=1)
    held = lim.try_acquire()
    assert held is not None
    with pytest.raises(RateLimitError):
        await lim.acquire(timeout=0)
    assert lim.queue_length == 0
    held.release()
    slot = await lim.acquire(timeout=0)  # capacity now: no waiting needed
    slot.release()


async def test_cancel_while_waiting_leaves_no_dead_waiter() -> None:
    lim = limiter(max_concurrency=1)
    held = lim.try_acquire()
    assert held is not None
    doomed = asyncio.create_task(lim.acquire())
    await settle()
    survivor = asyncio.create_task(lim.acquire())
    await settle()
    assert lim.queue_length == 2
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert lim.queue_length == 1
    held.release()
    slot = await asyncio.wait_for(survivor, GUARD_S)
    assert lim.in_flight == 1
    slot.release()
    assert lim.in_flight == 0


async def test_cancel_after_grant_returns_the_slot() -> None:
    clock = FakeClock()
    lim = limiter(max_concurrency=1, rpm=100, tpm=1000, clock=clock)
    held = lim.try_acquire(10)
    assert held is not None
    task = asyncio.create_task(lim.acquire(50))
    await settle()
    held.release(10)
    assert lim.in_flight == 1  # granted to the waiter, which has not resumed yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lim.in_flight == 0
    assert lim.queue_length == 0
    snap = lim.snapshot()
    assert snap["rpm_used"] == 1  # the cancelled grant is not counted
    assert snap["tpm_used"] == 10


async def test_cancel_after_grant_hands_the_slot_to_the_next_waiter() -> None:
    lim = limiter(max_concurrency=1)
    held = lim.try_acquire()
    assert held is not None
    first = asyncio.create_task(lim.acquire())
    await settle()
    second = asyncio.create_task(lim.acquire())
    await settle()
    held.release()
    first.cancel()
    slot = await asyncio.wait_for(second, GUARD_S)
    assert first.cancelled()
    assert lim.in_flight == 1
    slot.release()
    assert lim.in_flight == 0


# -- rates --------------------------------------------------------------------------------------


async def test_rpm_sliding_window() -> None:
    clock = FakeClock()
    lim = limiter(rpm=2, clock=clock)
    a = lim.try_acquire()
    clock.advance(20)
    b = lim.try_acquire()
    assert a is not None and b is not None
    a.release()
    b.release()
    assert lim.try_acquire() is None  # releasing does not refund requests
    assert not lim.has_capacity()
    assert lim.retry_after() == pytest.approx(40)
    assert lim.snapshot()["rpm_used"] == 2
    clock.advance(40)  # the first request leaves the window
    assert lim.has_capacity()
    c = lim.try_acquire()
    assert c is not None
    assert lim.try_acquire() is None
    assert lim.retry_after() == pytest.approx(20)


async def test_rpm_wait_longer_than_budget_fails_early_naming_the_limit() -> None:
    clock = FakeClock()
    lim = limiter(rpm=1, queue_timeout_s=5, clock=clock)
    assert lim.try_acquire() is not None
    with pytest.raises(RateLimitError) as info:
        await asyncio.wait_for(lim.acquire(), GUARD_S)  # would need 60 s: fails at once
    assert "rpm" in info.value.message
    assert "gpt-test" in info.value.message
    assert info.value.retry_after == pytest.approx(60)
    assert lim.queue_length == 0


async def test_rpm_wait_then_grant_when_the_window_moves() -> None:
    clock = FakeClock()
    lim = limiter(rpm=1, queue_timeout_s=2, clock=clock)
    assert lim.try_acquire() is not None
    clock.advance(59.95)
    task = asyncio.create_task(lim.acquire())
    await settle()
    assert not task.done()
    assert lim.queue_length == 1
    clock.advance(0.1)  # the limiter's timer re-checks the (fake) window
    slot = await asyncio.wait_for(task, GUARD_S)
    assert lim.snapshot()["rpm_used"] == 1
    slot.release()


async def test_tpm_reserves_estimate_and_release_corrects_it() -> None:
    clock = FakeClock()
    lim = limiter(tpm=100, clock=clock)
    slot = lim.try_acquire(80)
    assert slot is not None
    assert lim.snapshot()["tpm_used"] == 80
    assert not lim.has_capacity(30)
    assert lim.try_acquire(30) is None
    assert lim.has_capacity(20)
    slot.release(10)
    assert lim.snapshot()["tpm_used"] == 10
    assert lim.has_capacity(30)
    slot.release(1000)  # idempotent: no second correction
    assert lim.snapshot()["tpm_used"] == 10


async def test_tpm_release_with_more_than_estimated_blocks_later_requests() -> None:
    clock = FakeClock()
    lim = limiter(tpm=100, clock=clock)
    slot = lim.try_acquire(10)
    assert slot is not None
    slot.release(150)
    assert lim.snapshot()["tpm_used"] == 150
    assert not lim.has_capacity(0)
    clock.advance(60)
    assert lim.has_capacity(100)


async def test_release_after_entry_left_the_window_does_not_skew_counts() -> None:
    clock = FakeClock()
    lim = limiter(rpm=10, tpm=100, clock=clock)
    slot = lim.try_acquire(50)
    assert slot is not None
    clock.advance(61)
    slot.release(70)
    snap = lim.snapshot()
    assert snap["tpm_used"] == 0
    assert snap["rpm_used"] == 0
    assert lim.has_capacity(100)


async def test_request_larger_than_tpm_is_rejected() -> None:
    lim = limiter(tpm=100)
    assert lim.try_acquire(101) is None
    assert not lim.has_capacity(101)
    with pytest.raises(RateLimitError, match="tpm"):
        await asyncio.wait_for(lim.acquire(101), GUARD_S)
    assert lim.queue_length == 0


async def test_tpm_wait_then_grant() -> None:
    clock = FakeClock()
    lim = limiter(tpm=100, queue_timeout_s=2, clock=clock)
    first = lim.try_acquire(60)
    assert first is not None
    clock.advance(59.9)
    task = asyncio.create_task(lim.acquire(60))
    await settle()
    assert not task.done()
    clock.advance(0.2)
    slot = await asyncio.wait_for(task, GUARD_S)
    assert lim.snapshot()["tpm_used"] == 60
    first.release()
    slot.release()


async def test_snapshot_and_retry_after_with_limits() -> None:
    clock = FakeClock()
    lim = limiter(max_concurrency=2, max_queue=7, rpm=30, tpm=1000, clock=clock)
    slot = lim.try_acquire(100)
    assert slot is not None
    snap = lim.snapshot()
    assert snap["in_flight"] == 1
    assert snap["queue_length"] == 0
    assert snap["max_concurrency"] == 2
    assert snap["max_queue"] == 7
    assert snap["rpm"] == 30 and snap["tpm"] == 1000
    assert snap["rpm_used"] == 1 and snap["tpm_used"] == 100
    assert lim.retry_after() == 0.0
    slot.release(120)
    assert lim.snapshot()["tpm_used"] == 120


# -- properties ---------------------------------------------------------------------------------

OP = st.one_of(
    st.tuples(st.just("acquire"), st.integers(0, 0)),
    st.tuples(st.just("try"), st.integers(0, 0)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.integers(0, 3)),
)


async def _run_sequence(ops: list[tuple[str, int]], cap: int, max_queue: int) -> None:
    lim = limiter(max_concurrency=cap, max_queue=max_queue)
    held: list[Slot] = []
    granted: list[int] = []
    tasks: list[asyncio.Task[None]] = []

    async def acquirer(seq: int) -> None:
        # FIFO is a promise among waiters: one that found a free slot takes it at once, and may
        # resume before an earlier waiter whose slot was handed over in the same loop turn
        waits = not lim.has_capacity()
        try:
            slot = await lim.acquire()
        except RateLimitError:
            return
        if waits:
            granted.append(seq)
        held.append(slot)

    for op, arg in ops:
        if op == "acquire":
            tasks.append(asyncio.create_task(acquirer(len(tasks))))
        elif op == "try":
            slot = lim.try_acquire()
            if slot is not None:
                held.append(slot)
        elif op == "release" and held:
            held.pop(arg % len(held)).release()
        elif op == "cancel":
            pending = [t for t in tasks if not t.done()]
            if pending:
                pending[arg % len(pending)].cancel()
        elif op == "tick":
            await settle(arg + 1)
        assert lim.in_flight <= cap
        assert lim.queue_length <= max_queue
    await settle(10)
    assert lim.in_flight == len(held)
    assert granted == sorted(granted)  # FIFO: waiters are granted in arrival order
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    while held:
        held.pop().release()
    assert lim.in_flight == 0
    assert lim.queue_length == 0
    assert lim.has_capacity()


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OP, max_size=60), cap=st.integers(1, 3), max_queue=st.integers(0, 5))
def test_never_exceeds_max_concurrency_and_keeps_fifo(ops: list[tuple[str, int]], cap: int, max_queue: int) -> None:
    asyncio.run(_run_sequence(ops, cap, max_queue))


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("acquire"), st.integers(0, 150)),
            st.tuples(st.just("release"), st.integers(0, 200)),
            st.tuples(st.just("advance"), st.integers(0, 70)),
        ),
        max_size=60,
    ),
    rpm=st.integers(1, 5),
    tpm=st.integers(50, 300),
)
def test_rate_window_never_exceeded(ops: list[tuple[str, int]], rpm: int, tpm: int) -> None:
    clock = FakeClock()
    lim = limiter(rpm=rpm, tpm=tpm, clock=clock)
    log: list[tuple[float, int]] = []  # (time, tokens) of granted requests, as finally accounted
    held: list[tuple[Slot, int]] = []
    for op, arg in ops:
        if op == "acquire":
            before = [tokens for t, tokens in log if t > clock() - 60]
            fits = len(before) < rpm and sum(before) + max(arg, 1) <= tpm
            slot = lim.try_acquire(arg)
            assert (slot is not None) == fits
            if slot is not None:
                held.append((slot, len(log)))
                log.append((clock(), arg))
        elif op == "release" and held:
            slot, i = held.pop(arg % len(held))
            actual = arg % 120
            slot.release(actual)
            if clock() - log[i][0] < 60:  # a correction only applies inside the window
                log[i] = (log[i][0], actual)
        else:
            clock.advance(arg)
        recent = [tokens for t, tokens in log if t > clock() - 60]
        assert len(recent) <= rpm
        assert lim.snapshot()["rpm_used"] == len(recent)
        assert lim.snapshot()["tpm_used"] == sum(recent)
