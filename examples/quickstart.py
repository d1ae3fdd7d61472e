"""The README's first example: post a job, then claim and consume it."""

from __future__ import annotations

import asyncio

import aiojobboard as ajb


async def main() -> None:
    async with ajb.connect("memory://orders") as board:
        await board.post("ship", {"order": 1234}, priority=ajb.JobPriority.HIGH)

        async for job in board.iterjobs(only_unclaimed=True):
            try:
                async with board.claim(job, "worker-1") as claim:
                    print("shipping", job.details["order"], "attempt", claim.attempt)
                # consumed here; an exception in the block would have abandoned it
            except ajb.UnclaimableJob:
                continue  # another consumer was quicker
        print("jobs left:", await board.job_count())


if __name__ == "__main__":
    asyncio.run(main())
