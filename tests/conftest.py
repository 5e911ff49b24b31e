import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(
    os.environ.get("FCNKIT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared/data")
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real-data folder (../shared/data); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set FCNKIT_SHARED_DATA)")
    return SHARED_DATA
