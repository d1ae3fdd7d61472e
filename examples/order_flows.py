"""The flow that conductor_demo.py runs: a factory any conductor can import.

A flow's factory is recorded by its import path, so it lives in a module of
its own rather than in the script that posts the jobs.
"""

from __future__ import annotations

import asyncio

import aiojobboard as ajb


async def reserve(order: int, items: list[str]) -> str:
    await asyncio.sleep(0.01)
    return f"reservation-{order}"


async def release(order: int, items: list[str], *, result: str) -> None:
    print(f"  order {order}: released {result}")


async def charge(order: int, amount: float, card: str) -> str:
    await asyncio.sleep(0.01)
    if card == "declined":
        raise ValueError(f"card for order {order} was declined")
    return f"payment-{order}"


async def ship(order: int, reservation: str, payment: str) -> str:
    return f"parcel-{order}"


def order_flow(express: bool) -> ajb.Flow:
    """Reserve the items, charge the card, ship; *express* only renames it."""
    return ajb.Flow(
        "express-order" if express else "order",
        [
            ajb.Step(
                "reserve",
                reserve,
                requires=("order", "items"),
                provides=("reservation",),
                revert=release,
            ),
            ajb.Step(
                "charge",
                charge,
                requires=("order", "amount", "card"),
                provides=("payment",),
            ),
            ajb.Step(
                "ship",
                ship,
                requires=("order", "reservation", "payment"),
                provides=("parcel",),
            ),
        ],
    )
