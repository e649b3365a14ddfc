"""A dataset's card (`README.md`): YAML front matter the Hub and `datasets` read, then
what the dataset is and how it was made.

The front matter holds `license` (when one is given; the card says so otherwise),
`pretty_name`, `task_categories`, `size_categories` (the Hub's buckets of row counts),
`tags`, `configs` (where the data files are) and, for Parquet, `dataset_info` (the
features, rows and sizes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DatasetCard", "size_category"]

_SIZES = tuple(
    zip(
        (10**3, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9, 10**10, 10**11, 10**12),
        ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"),
        strict=True,
    )
)
"""The Hub's `size_categories` bounds and their names."""


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket of `rows` (`n<1K`, `1K<n<10K`, ..., `n>1T`)."""
    lower = None
    for bound, name in _SIZES:
        if rows < bound:
            return f"n<{name}" if lower is None else f"{lower}<n<{name}"
        lower = name
    return "n>1T"


def _yaml_feature(feature: Any) -> dict[str, Any]:
    """A feature in the card's YAML form (what `datasets` writes and reads)."""
    kind = feature.get("_type")
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "Image":
        return {"dtype": "image"}
    if kind in ("List", "LargeList"):
        inner = _yaml_feature(feature["feature"])
        if list(inner) in (["dtype"], ["struct"]):
            inner = next(iter(inner.values()))
        return {"list" if kind == "List" else "large_list": inner}
    return {"struct": [{"name": name, **_yaml_feature(sub)} for name, sub in feature.items()]}


def _yaml(value: Any, indent: str = "") -> list[str]:
    """Block-style YAML lines; scalars as JSON (valid YAML)."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}{key}:")
                lines.extend(_yaml(item, indent + ("" if isinstance(item, list) else "  ")))
            else:
                lines.append(f"{indent}{key}: {json.dumps(item)}")
        return lines
    for item in value:
        inner = _yaml(item, indent + "  ") if isinstance(item, (dict, list)) else []
        if inner:
            lines.append(f"{indent}- {inner[0].lstrip()}")
            lines.extend(inner[1:])
        else:
            lines.append(f"{indent}- {json.dumps(item)}")
    return lines


@dataclass(frozen=True)
class DatasetCard:
    """What a dataset's card says.

    Attributes
    ----------
    about:
        What the dataset is and how it was made (Markdown, its title first).
    format:
        `jsonl` (`data.jsonl`) or `parquet` (shards `data/train-*.parquet`).
    rows:
        Its rows.
    files:
        Its data files.
    size:
        The bytes of its data files.
    features:
        Its `datasets` features (Parquet; `None`: not written).
    pretty_name:
        Its name as the Hub shows it.
    license:
        Its license's Hub identifier (`cc-by-4.0`, `mit`, ...); `None`: not set.
    task_category:
        The Hub's task category (`text-to-image`).
    """

    about: str
    format: Literal["jsonl", "parquet"]
    rows: int
    files: int
    size: int
    features: dict[str, Any] | None = None
    pretty_name: str | None = None
    license: str | None = None
    task_category: str = "text-to-image"

    def front_matter(self) -> dict[str, Any]:
        """The card's YAML front matter, as data."""
        header: dict[str, Any] = {}
        if self.license is not None:
            header["license"] = self.license
        if self.pretty_name is not None:
            header["pretty_name"] = self.pretty_name
        data = "data.jsonl" if self.format == "jsonl" else "data/train-*.parquet"
        header |= {
            "task_categories": [self.task_category],
            "size_categories": [size_category(self.rows)],
            "tags": ["imagetask", "synthetic", "image"],
            "configs": [
                {"config_name": "default", "data_files": [{"split": "train", "path": data}]}
            ],
        }
        if self.features is not None:
            header["dataset_info"] = {
                "features": [
                    {"name": name, **_yaml_feature(sub)} for name, sub in self.features.items()
                ],
                "splits": [{"name": "train", "num_bytes": self.size, "num_examples": self.rows}],
                "download_size": self.size,
                "dataset_size": self.size,
            }
        return header

    def text(self) -> str:
        """The card: the front matter, `about`, the data files and how to load them."""
        if self.format == "jsonl":
            where = "in `data.jsonl`, one JSON object per line (images as base64 text)"
        else:
            files = "file" if self.files == 1 else "files"
            where = f"in {self.files} Parquet {files} under `data/`"
        license = (
            ""
            if self.license is not None
            else "\n\nNo license is set: give one when publishing (`imagetask publish "
            "--license ID`) so that others know how they may use the dataset."
        )
        return (
            "---\n"
            + "\n".join(_yaml(self.front_matter()))
            + "\n---\n\n"
            + self.about
            + f"\n\nThe data: {self.rows:,} rows {where}.{license}\n\n"
            "```python\nfrom datasets import load_dataset\n\n"
            'dataset = load_dataset("path/to/this/folder", split="train")\n```\n'
        )
