"""Types of the C core (labelhaul/_maskcore.c); its docstring says what each function does."""

from typing import Any

from numpy.typing import NDArray
from typing_extensions import Buffer

_Bytes = Buffer | NDArray[Any]

def unfilter(rows: _Bytes, height: int, stride: int, bpp: int, /) -> bool: ...
def find_runs(
    pixels: _Bytes, first: int, stride: int, height: int, width: int, wanted: _Bytes, /
) -> tuple[bytes, list[tuple[int, int, int, int, int, int, int, int]]]: ...
def encode_runs(
    runs: bytes,
    first: int,
    count: int,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    height: int,
    width: int,
    /,
) -> tuple[bytes, bytes]: ...
