"""Lease keeping when the server cannot be reached.

A memory board stands in for a server here, with its renewals made to fail as
they would while the network is down: a fault the memory adapter cannot show.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

import pytest

import aiojobboard as ajb
from aiojobboard.boards.memory import MemoryBoard
from aiojobboard.claims import Finish

LEASE = 0.6


class Unreachable(MemoryBoard):
    """A memory board whose renewals fail while ``down`` is set."""

    down = False
    attempts = 0

    async def _renew(self, claims: Sequence[ajb.Claim]) -> list[bool]:
        if self.down:
            self.attempts += 1
            raise ajb.ConnectionLost("server unreachable (simulated)")
        return await super()._renew(claims)


async def open_unreachable() -> Unreachable:
    return await Unreachable.from_url(f"memory://leases-{uuid.uuid4().hex}")


async def test_renewal_failures_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    board = await open_unreachable()
    try:
        claim = await board.claim(await board.post("x"), "w", lease=LEASE)
        board.down = True
        with caplog.at_level(logging.WARNING, logger="aiojobboard.board"):
            await asyncio.sleep(LEASE * 0.6)
        board.down = False
        await asyncio.sleep(LEASE)
        assert board.attempts >= 2
        assert claim.held
        assert any("could not renew" in r.getMessage() for r in caplog.records)
        await claim.consume()
    finally:
        await board.close()


async def test_a_claim_that_cannot_be_renewed_is_lost_on_time() -> None:
    board = await open_unreachable()
    try:
        job = await board.post("x")
        board.down = True
        # Hear nothing from the server either: only the local deadline is left.
        board._deliver = lambda event: None  # type: ignore[method-assign]
        started = asyncio.get_running_loop().time()
        with pytest.raises(ajb.ClaimLost, match="ran out"):
            async with board.claim(job, "w", lease=LEASE):
                await asyncio.sleep(LEASE * 10)
        elapsed = asyncio.get_running_loop().time() - started
        assert LEASE * 0.9 <= elapsed < LEASE * 5
    finally:
        await board.close()


class SlowReplies(MemoryBoard):
    """A memory board whose finishes land at once but answer late.

    A server cannot be made to answer a renewal sent after a consume before
    it answers the consume, every time; this board does.
    """

    reply_delay = 0.0
    refused = 0

    async def _finish(
        self, uuid: str, owner: str, token: int | None, how: Finish
    ) -> None:
        await super()._finish(uuid, owner, token, how)
        await asyncio.sleep(self.reply_delay)

    async def _renew(self, claims: Sequence[ajb.Claim]) -> list[bool]:
        answers = await super()._renew(claims)
        self.refused += answers.count(False)
        return answers


async def test_a_renewal_refused_while_a_consume_answers_does_not_lose_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The consume has landed, so the board refuses the renewal that the keeper
    # sends before the consume's answer arrives: the claim is consumed, not lost.
    board = await SlowReplies.from_url(f"memory://leases-{uuid.uuid4().hex}")
    try:
        claim = await board.claim(await board.post("x"), "w", lease=LEASE)
        board.reply_delay = LEASE / 2
        with caplog.at_level(logging.WARNING, logger="aiojobboard.claim"):
            await claim.consume()
        assert board.refused >= 1
        assert claim.state is ajb.ClaimState.CONSUMED
        assert not [r for r in caplog.records if "lost" in r.getMessage()]
    finally:
        await board.close()
