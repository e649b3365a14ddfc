"""`imagetask publish`: exactly the dataset (data, card, referenced images) goes to the Hub,
checked file by file and byte by byte against a loopback server speaking the Hub's HTTP
API as `huggingface_hub` calls it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagetask.curate import dataset_files, select
from imagetask.errors import ConfigError, ReadError
from imagetask.io._card import size_category
from tests.support.gallery_runs import MOON, PROMPTS, make_run
from tests.support.servers import serving

REPO = "someone/pictures"
TOKEN = "hf_loopback_token_123"


@dataclass
class Hub:
    """What the loopback Hub received."""

    url: str = ""
    created: list[dict[str, Any]] = field(default_factory=list)
    preuploaded: list[str] = field(default_factory=list)
    lfs: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, bytes]] = field(default_factory=list)
    auth: set[str | None] = field(default_factory=set)


class HubHandler(BaseHTTPRequestHandler):
    """The endpoints `create_repo` and `create_commit` call: `.parquet` and `.png` files are
    LFS (batch, then a PUT of their bytes), the others go inline in the commit."""

    hub: Hub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def answer(self, value: Any, status: int = 200) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        hub, body = self.hub, self.body()
        hub.auth.add(self.headers.get("Authorization"))
        if self.path == "/api/repos/create":
            hub.created.append(json.loads(body))
            self.answer({"url": f"{hub.url}/datasets/{REPO}"})
        elif self.path == "/api/validate-yaml":
            self.answer({})
        elif self.path == f"/api/datasets/{REPO}/preupload/main":
            files = json.loads(body)["files"]
            hub.preuploaded.extend(file["path"] for file in files)
            modes = [
                {
                    "path": file["path"],
                    "uploadMode": "lfs"
                    if file["path"].endswith((".parquet", ".png"))
                    else "regular",
                    "shouldIgnore": False,
                }
                for file in files
            ]
            self.answer({"files": modes})
        elif self.path == f"/datasets/{REPO}.git/info/lfs/objects/batch":
            objects = json.loads(body)["objects"]
            self.answer(
                {
                    "transfer": "basic",
                    "objects": [
                        {
                            **item,
                            "actions": {"upload": {"href": f"{hub.url}/lfs/{item['oid']}"}},
                        }
                        for item in objects
                    ],
                }
            )
        elif self.path == f"/api/datasets/{REPO}/commit/main":
            files: dict[str, bytes] = {}
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    files[value["path"]] = hub.lfs[value["oid"]]
            hub.commits.append(files)
            self.answer({"commitUrl": f"{hub.url}/datasets/{REPO}/commit/1", "commitOid": "1" * 40})
        else:
            self.answer({"error": f"no route {self.path}"}, 404)

    def do_PUT(self) -> None:
        data = self.body()
        oid = self.path.rsplit("/", 1)[1]
        assert hashlib.sha256(data).hexdigest() == oid
        self.hub.lfs[oid] = data
        self.answer({})


@contextmanager
def loopback_hub() -> Iterator[Hub]:
    hub = Hub()
    handler = type("Handler", (HubHandler,), {"hub": hub})
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as server:
        hub.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield hub


def imagetask(*args: str, hub: Hub | None = None, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_ENDPOINT": hub.url if hub else "http://127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-m", "imagetask", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def the_dataset(folder: Path) -> dict[str, bytes]:
    """The files of a JSONL run folder that make its dataset: its data and the images its
    rows name."""
    lines = (folder / "data.jsonl").read_text().splitlines()
    images = {json.loads(line)["image_path"] for line in lines} - {None}
    return {
        "data.jsonl": (folder / "data.jsonl").read_bytes(),
        **{path: (folder / path).read_bytes() for path in images},
    }


def front_matter(card: str) -> dict[str, Any]:
    head = card.split("---\n")[1]
    loaded: dict[str, Any] = yaml.safe_load(head)
    return loaded


@pytest.mark.parametrize(
    ("rows", "category"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1_000, "1K<n<10K"),
        (54_321, "10K<n<100K"),
        (10**6, "1M<n<10M"),
        (10**12, "n>1T"),
    ],
)
def test_size_categories_are_the_hubs_buckets(rows: int, category: str) -> None:
    assert size_category(rows) == category


def test_a_dry_run_lists_exactly_the_dataset_and_sends_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, [*PROMPTS[:3], PROMPTS[MOON]])
    (run / "gallery").mkdir()
    (run / "gallery" / "index.html").write_text("<html>")
    (run / "batch-jobs").mkdir()
    (run / "notes.txt").write_text("mine")
    with (run / "artifacts" / "image_generation_0" / "images" / "stray.png").open("wb") as file:
        file.write(b"not referenced")

    done = imagetask("publish", str(run), "--repo", REPO, "--dry-run", home=tmp_path)

    assert done.returncode == 0, done.stderr
    files = dataset_files(run)
    assert [file.path for file in files[:2]] == ["README.md", "data.jsonl"]
    expected = {"README.md": files[0].data, **the_dataset(run)}
    assert len(expected) == 2 + 6  # three prompts made two images each; the moon's failed
    assert done.stdout.splitlines() == [
        f"{len(data):>12}  {path}" for path, data in _in_order(files, expected)
    ]
    total = sum(len(data) for data in expected.values())
    assert done.stderr == (
        f"imagetask: dry run: 8 files ({total:,} bytes) would be sent to {REPO}; nothing was sent\n"
    )


def _in_order(files: list[Any], expected: dict[str, bytes | None]) -> list[tuple[str, bytes]]:
    assert sorted(file.path for file in files) == sorted(expected)
    return [(file.path, expected[file.path] or b"") for file in files]


def test_publish_sends_the_data_card_and_images_in_one_commit(tmp_path: Path) -> None:
    run = tmp_path / "pictures-run"
    make_run(run, [*PROMPTS[:3], PROMPTS[MOON]])
    (run / "gallery").mkdir()
    (run / "gallery" / "index.html").write_text("<html>")

    with loopback_hub() as hub:
        done = imagetask(
            "publish",
            str(run),
            "--repo",
            REPO,
            "--private",
            "--license",
            "cc-by-4.0",
            hub=hub,
            home=tmp_path,
        )

    assert done.returncode == 0, done.stderr
    assert hub.created == [
        {"name": "pictures", "organization": "someone", "visibility": "private", "type": "dataset"}
    ]
    assert hub.auth == {f"Bearer {TOKEN}"}
    [commit] = hub.commits
    card = commit.pop("README.md").decode()
    assert commit == the_dataset(run)
    assert sorted(hub.lfs.values()) == sorted(
        data for path, data in commit.items() if path.endswith(".png")
    )
    total = sum(len(data) for data in commit.values()) + len(card.encode())
    assert (
        done.stdout == f"imagetask: 8 files ({total:,} bytes) sent to {hub.url}/datasets/{REPO}\n"
    )
    assert TOKEN not in done.stdout + done.stderr
    assert front_matter(card) == {
        "license": "cc-by-4.0",
        "pretty_name": "pictures-run",
        "task_categories": ["text-to-image"],
        "size_categories": ["n<1K"],
        "tags": ["imagetask", "synthetic", "image"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data.jsonl"}]}
        ],
    }
    assert (
        "Images generated with imagetask: task `ImageGeneration` (`image_generation_0`), model "
        "`FlakyPlaceholder`, parameters: size=64x64, seed=0; 2 generation(s) per input row.\n\n"
        "| input rows | output rows | images | failed generations |\n"
        "| --- | --- | --- | --- |\n"
        "| 4 | 8 | 6 | 2 |\n\n"
        "The data: 8 rows in `data.jsonl`, one JSON object per line (images as base64 text).\n\n"
    ) in card
    assert "No license is set" not in card


def test_a_selected_parquet_dataset_publishes_its_shards_and_a_card_datasets_reads(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    make_run(run, [*PROMPTS[:3], PROMPTS[MOON]], format="parquet")
    select(run, tmp_path / "chosen", reject_failed=True)

    with loopback_hub() as hub:
        done = imagetask(
            "publish", str(tmp_path / "chosen"), "--repo", REPO, hub=hub, home=tmp_path
        )

    assert done.returncode == 0, done.stderr
    [commit] = hub.commits
    card = commit.pop("README.md").decode()
    shard = (tmp_path / "chosen" / "data" / "train-00000.parquet").read_bytes()
    images = sorted((tmp_path / "chosen" / "artifacts").rglob("*.png"))
    assert commit == {
        "data/train-00000.parquet": shard,
        **{path.relative_to(tmp_path / "chosen").as_posix(): path.read_bytes() for path in images},
    }
    assert len(images) == 6
    header = front_matter(card)
    assert "license" not in header
    assert header["configs"] == [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": "data/train-*.parquet"}],
        }
    ]
    assert header["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": len(shard), "num_examples": 6}
    ]
    assert [feature["name"] for feature in header["dataset_info"]["features"]] == [
        "prompt",
        "image",
        "image_path",
        "model_name",
        "distilabel_metadata",
    ]
    assert (
        "Selected from the run `run` (4 input rows): 0 images rejected by hand, 2 failed "
        "generations left out." in card
    )
    assert "No license is set: give one when publishing (`imagetask publish --license ID`)" in card


def test_publish_refuses_what_is_not_a_finished_dataset(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:1], num_generations=1)
    (run / "run.json").unlink()
    with pytest.raises(ReadError, match="holds no finished run"):
        dataset_files(run)
    done = imagetask("publish", str(run), "--repo", REPO, home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"imagetask: error: {run} holds no finished run (no run.json)")

    other = tmp_path / "other"
    make_run(other, PROMPTS[:1], num_generations=1)
    row = json.loads((other / "data.jsonl").read_text())
    (other / "data.jsonl").write_text(json.dumps({**row, "image_path": "run.json"}) + "\n")
    with pytest.raises(ReadError) as caught:
        dataset_files(other)
    assert str(caught.value) == (
        f"{other / 'data.jsonl'} line 1: the image path 'run.json' is not under artifacts/: "
        "it is not sent"
    )
    (other / "data.jsonl").write_text(json.dumps({**row, "image_path": "../run/data.jsonl"}) + "\n")
    with pytest.raises(
        ReadError, match=r"the image path '\.\./run/data\.jsonl' leads out of the run folder"
    ):
        dataset_files(other)


def test_a_repository_id_is_user_slash_name(tmp_path: Path) -> None:
    from imagetask.curate import publish

    run = tmp_path / "run"
    make_run(run, PROMPTS[:1], num_generations=1)
    with pytest.raises(ConfigError, match=r"^--repo: expected user/name, got 'pictures'$"):
        publish(run, "pictures")


def test_a_refusing_hub_is_one_line_without_the_token(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, PROMPTS[:1], num_generations=1)
    with loopback_hub() as hub:
        done = imagetask("publish", str(run), "--repo", "someone/else", hub=hub, home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("imagetask: error: publishing to someone/else: ")
    assert done.stderr.count("\n") == 1
    assert TOKEN not in done.stderr
