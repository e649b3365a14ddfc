"""Reading a run's output as its checkpoint records it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def recorded_table(out: Path) -> pa.Table:
    """The Parquet output's rows the checkpoint records: its shards, then its staged
    batches (cut at their recorded size)."""
    state = json.loads((out / "checkpoint.json").read_text())["sink"]
    tables = [pq.read_table(out / "data" / shard["name"]) for shard in state["shards"]]
    for staged in state["staged"]:
        with (out / ".staging" / staged["name"]).open("rb") as file:
            data = file.read(staged["bytes"])
        if data:
            tables.append(pa.ipc.open_stream(data).read_all())
    tables = [table.replace_schema_metadata(None) for table in tables]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def image_bytes(table: pa.Table, column: str = "image") -> list[bytes | None]:
    """The image bytes of the `Image` column (`struct<bytes, path>`)."""
    return [None if image is None else image["bytes"] for image in table.column(column).to_pylist()]
