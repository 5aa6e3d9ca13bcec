"""Progress bars for long loops: counts, rate and ETA on a terminal, silent otherwise."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from pipeline.core.distributed import rank

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "img") -> Iterator[T]:
    """Wrap `iterable` in a bar; `disable=None` turns it off when stderr is not a TTY. Of several
    ranks only rank 0 draws its bar (its share of the work), so bars do not interleave."""
    yield from tqdm(iterable, total=total, desc=desc, unit=unit, disable=None if rank() == 0 else True, dynamic_ncols=True)


def progress_bar(total: int, desc: str = "", unit: str = "img") -> tqdm:
    """A manually updated bar (`bar.update(n)`), for batched loops counting images."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if rank() == 0 else True, dynamic_ncols=True)
