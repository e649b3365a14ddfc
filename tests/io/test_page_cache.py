"""Files the run writes and does not read back soon give their cached pages back as they
are written (the next writes reuse them): the JSONL output and Parquet shards every
`RECYCLE_BYTES`, a durable image store (a run's artifacts) each image."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import pickle
from pathlib import Path

from imagetask import _core
from imagetask._durable import RECYCLE_BYTES, OutputFile
from imagetask.io._jsonl import JsonlSink

PAGES = RECYCLE_BYTES // mmap.PAGESIZE


def cached_pages(path: Path) -> int:
    """How many of the file's pages the kernel holds in its page cache (Linux `mincore`
    over a mapping of the file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    vector = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
    with path.open("rb") as file:
        start = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, file.fileno(), 0)
        assert start != ctypes.c_void_p(-1).value, ctypes.get_errno()
        try:
            assert libc.mincore(start, size, vector) == 0, ctypes.get_errno()
        finally:
            libc.munmap(start, size)
    return sum(byte & 1 for byte in vector.raw)


def image_of(seed: int, size: int) -> bytes:
    """A PNG-headed image of about `size` bytes."""
    return b"\x89PNG\r\n\x1a\n" + hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def test_an_output_file_gives_back_its_pages_every_recycle_bytes(tmp_path: Path) -> None:
    path = tmp_path / "out"
    piece = b"x" * (RECYCLE_BYTES // 4 + 1)
    with OutputFile(path, "wb") as file:
        for written in range(1, 13):
            assert file.write(memoryview(piece)) == len(piece)
            # At most the pages of the bytes written since the last time they went back.
            assert cached_pages(path) <= (written % 4) * len(piece) // mmap.PAGESIZE + 2
        file.sync()
        assert cached_pages(path) == 0
    assert path.read_bytes() == piece * 12


def test_the_jsonl_output_gives_back_its_pages_as_a_batch_is_written(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    rows = [{"id": i, "text": "x" * (1 << 20)} for i in range(3 * RECYCLE_BYTES // 2**20 + 2)]
    try:
        sink.write(rows)
        assert 0 < cached_pages(sink.path) <= PAGES
        sink.sync()
        assert cached_pages(sink.path) == 0
    finally:
        sink.close()
    assert sink.path.read_bytes().count(b"\n") == len(rows)


def test_a_durable_store_gives_back_the_pages_of_what_it_wrote(tmp_path: Path) -> None:
    png = image_of(0, 1 << 20)
    kept, durable = (
        _core.ImageStore(tmp_path / "kept"),
        _core.ImageStore(tmp_path / "durable", True),
    )
    for store in (kept, durable):
        store.folder.mkdir()
    held, given = kept.put(png), durable.put(png)
    assert isinstance(held, _core.StoredImage) and isinstance(given, _core.StoredImage)
    assert (cached_pages(Path(held.path)), cached_pages(Path(given.path))) == (
        -(-len(png) // mmap.PAGESIZE),
        0,
    )
    assert given.read() == png
    assert (kept.durable, durable.durable) == (False, True)
    assert repr(durable) == f"ImageStore({tmp_path / 'durable'}, durable=True)"
    copy = pickle.loads(pickle.dumps(durable))
    assert (copy.folder, copy.durable) == (durable.folder, True)
