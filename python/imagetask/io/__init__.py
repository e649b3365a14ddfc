"""A run's files: input readers, output sinks (JSONL, Parquet laid out as a Hugging Face
dataset), its checkpoint and output identity, and `RunFolder`, the one reader of a run's
output folder."""

from imagetask.io._readers import FORMATS, Reader
from imagetask.io._run_folder import RunFolder

__all__ = ["FORMATS", "Reader", "RunFolder"]
