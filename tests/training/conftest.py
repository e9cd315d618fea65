"""Training tests: tiny models on the CPU, one torch thread.

One thread because the tiny model is too small to gain from more, and on a shared host
extra threads spin against other work: measured here, a step took 1.4 s with two
threads against 0.07 s with one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.training.aft_fixtures import arithmetic_rows
from training.rows import write_jsonl


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    write_jsonl(arithmetic_rows(), path)
    return path
