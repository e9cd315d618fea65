"""Running awaitables together: every result in order, or the first failure as it is.

`asyncio.gather` leaves the others running when one fails, and a TaskGroup raises an
ExceptionGroup; callers here want neither: the first failure cancels the rest and is raised
as the exception it was, so the error handling above sees one error of a known type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def all_or_first_error(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run `coroutines` concurrently; their results in order. The first failure cancels the others
    and is raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [task.result() for task in tasks]
