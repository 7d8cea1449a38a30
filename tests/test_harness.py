"""The test harness itself: a shared fake's reset and leftover check, stalls on an event, the fake clock.

The other suites rely on these to be deterministic; each check here must be able to fail.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.loopback import serve
from tests.conftest import FakeClock, clean

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        return await http.post("/v1/chat/completions", json=CHAT)


async def test_clean_gives_each_test_a_fake_as_new() -> None:
    fake = FakeOpenAI(default=Behavior(text="as built"))
    async with serve(fake) as url:
        await post(url)  # a request recorded by "an earlier test"
        fake.push(Behavior(status=500))  # ... a behaviour it left
        fake.default = Behavior(status=503)  # ... and a default it changed
        with clean(fake):
            assert (fake.requests, fake.pending, fake.default) == ([], (), Behavior(text="as built"))
            fake.push(Behavior(status=429))
            assert (await post(url)).status_code == 429  # consumed: leaving the block does not fail
        assert fake.pending == ()


def test_clean_fails_a_test_that_left_a_scripted_behaviour_unconsumed() -> None:
    fake = FakeOpenAI()
    with pytest.raises(pytest.fail.Exception, match=r"1 scripted behaviour\(s\) never consumed"):
        with clean(fake):
            fake.push(Behavior(status=500))
    assert fake.pending == ()  # reported once, not left for the next test


async def test_a_delay_may_be_an_event_the_fake_waits_for() -> None:
    stall = asyncio.Event()
    fake = FakeOpenAI(default=Behavior(delay_headers=stall))
    async with serve(fake) as url:
        answer = asyncio.create_task(post(url))
        async with asyncio.timeout(5):  # only a guard: the request arrives in milliseconds
            while not fake.requests:
                await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert not answer.done()  # it waits for the event, however long that takes
        stall.set()
        assert (await answer).status_code == 200


async def test_the_fake_clock_records_sleeps_and_advances_instead_of_waiting() -> None:
    clock = FakeClock(now=10.0)
    await clock.sleep(3600.0)  # returns at once: a real sleep would hang this test
    clock.advance(0.5)
    assert (clock(), clock.sleeps) == (3610.5, [3600.0])
