"""Input readers: rows from JSONL, CSV, text (one prompt per line) and Parquet files.

The documented home of `Reader`, kept here; it lives in `imagetask.io`."""

from imagetask.io._readers import FORMATS, Reader

__all__ = ["FORMATS", "Reader"]
