"""`OpenAIBatchImageGeneration` and `--model openai-batch:` against a loopback server
speaking the Files and Batches wire format, driven by the real `openai` client."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest
from PIL import Image

from imagetask import ImageGeneration
from imagetask._core import ImageStore, StoredImage
from imagetask.cli import main
from imagetask.errors import ReadError, RunError
from imagetask.io._checkpoint import CHECKPOINT, VERSION, Checkpoint, write_checkpoint
from imagetask.models import ImageFile, OpenAIBatchImageGeneration
from imagetask.models.openai_batch._journal import JOURNAL, Journal
from imagetask.models.openai_batch._spool import Spool, SpooledImage, SpooledLine
from tests.support.batch_server import BLOCKED, DROPPED, BatchServer, Plan, batch_server
from tests.support.processes import killed_when, wait_for
from tests.support.runs import rows_done

KEY = "sk-test-batch-secret-0123456789"
META = "distilabel_metadata"
ERROR = "error_image_generation_0"
RAW = "raw_output_image_generation_0"
STATS = "statistics_image_generation_0"
MISSING = "image 0 of the model's answer is missing: "
EXPIRED = "batch_expired: This request could not be executed before the completion window expired."


@pytest.fixture
def server() -> Iterator[BatchServer]:
    with batch_server(key=KEY) as running:
        yield running


def batch_model(server: BatchServer, **fields: Any) -> OpenAIBatchImageGeneration:
    fields.setdefault("model", "gpt-image-1")
    fields.setdefault("api_key", KEY)
    return OpenAIBatchImageGeneration(
        base_url=f"{server.url}/v1",
        poll_interval=0.005,
        max_poll_interval=0.02,
        retry_backoff=0.001,
        **fields,
    )


def generate(
    server: BatchServer, prompts: list[str], num_generations: int = 1, **fields: Any
) -> list[dict[str, Any]]:
    task = ImageGeneration(
        image_generation_model=batch_model(server, **fields), num_generations=num_generations
    )
    task.load()
    try:
        return task.process_batch([{"prompt": prompt} for prompt in prompts])
    finally:
        task.unload()


def decoded(rows: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(row["image"]) for row in rows if row["image"] is not None]


def input_lines(server: BatchServer) -> list[list[dict[str, Any]]]:
    """The lines of each created job's input file, in the order the jobs were created."""
    return [server.jobs[batch].lines for batch in sorted(server.jobs)]


def errors(rows: list[dict[str, Any]]) -> list[str | None]:
    return [row[META].get(ERROR) for row in rows]


# --- wire format and results -----------------------------------------------------------


def test_requests_are_the_images_api_bodies_and_answers_become_rows(server: BatchServer) -> None:
    rows = generate(
        server,
        ["a cat", "a dog"],
        num_generations=3,
        images_per_request=2,
        generation_kwargs={"size": "16x16", "quality": "low"},
    )
    [upload] = [upload for upload in server.uploads.values() if upload.purpose == "batch"]
    assert upload.filename.endswith(".jsonl")

    def line(custom_id: str, prompt: str, **n: int) -> dict[str, Any]:
        body = {"model": "gpt-image-1", "prompt": prompt, "quality": "low", "size": "16x16"}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/images/generations",
                "body": {**body, **n}}  # fmt: skip

    assert input_lines(server) == [
        [
            line("row-0-part-0", "a cat", n=2),
            line("row-0-part-1", "a cat"),
            line("row-1-part-0", "a dog", n=2),
            line("row-1-part-1", "a dog"),
        ]
    ]
    [job] = server.jobs.values()
    assert job.object["endpoint"] == "/v1/images/generations"
    assert (job.object["completion_window"], job.object["metadata"]) == ("24h", None)
    assert set(server.served.auth) == {f"Bearer {KEY}"}

    assert [row["prompt"] for row in rows] == ["a cat"] * 3 + ["a dog"] * 3
    assert errors(rows) == [None] * 6
    images = decoded(rows)
    assert Counter(images) == Counter(server.served.images) and len(set(images)) == 6
    assert {Image.open(io.BytesIO(image)).size for image in images} == {(16, 16)}
    batch_id = job.object["id"]
    custom_ids = ["row-0-part-0", "row-0-part-0", "row-0-part-1"]
    custom_ids += [custom_id.replace("row-0", "row-1") for custom_id in custom_ids]
    for row, custom_id, image in zip(rows, custom_ids, images, strict=True):
        raw = row[META][RAW]
        assert (raw["batch_id"], raw["custom_id"]) == (batch_id, custom_id)
        assert raw["revised_prompt"] == f"revised: {row['prompt']}"
        n = 1 if custom_id.endswith("part-1") else 2
        assert row[META][STATS] == {
            "image_bytes": len(image),
            "images_in_request": n,
            "input_tokens": 2,
            "output_tokens": 100 * n,
            "total_tokens": 2 + 100 * n,
        }


def test_error_lines_and_missing_requests_fail_only_their_rows(server: BatchServer) -> None:
    rows = generate(server, ["a cat", f"a {BLOCKED} dog", f"a {DROPPED} fox", "a cow"])
    assert errors(rows) == [
        None,
        MISSING + "HTTP 400: moderation_blocked: Your request was rejected as a result of our "
        "safety system.",
        MISSING + "batch job batch_0002 completed without answering this request",
        None,
    ]
    assert len(decoded(rows)) == 2 and Counter(decoded(rows)) == Counter(server.served.images)
    assert rows[1][META][RAW] == {
        "images": [None],
        "batch_id": "batch_0002",
        "custom_id": "row-1-part-0",
        "error": "HTTP 400: moderation_blocked: Your request was rejected as a result of our "
        "safety system.",
    }


def test_answered_images_wait_on_disk_until_the_rows_are_built(
    server: BatchServer, tmp_path: Path
) -> None:
    model = batch_model(server, output_dir=str(tmp_path))
    model.load()
    answers = model.generate(["a cat", "a dog"], num_generations=2)
    images = [image for answer in answers for part in answer for image in part["images"]]
    assert all(isinstance(image, ImageFile) for image in images)
    spool = tmp_path / "batch-jobs" / "spool"
    names = {f"{hashlib.sha256(image).hexdigest()}.png" for image in server.served.images}
    assert {path.name for path in spool.iterdir()} == names and len(names) == 4
    assert [image.read() for image in images] == server.served.images
    assert list(spool.iterdir()) == []
    model.unload()
    assert not spool.exists()


def png(seed: int) -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (2, 2), (seed, 0, 0)).save(image, format="PNG")
    return image.getvalue()


def images_body(*images: bytes | str) -> bytes:
    items = [
        {"url": image} if isinstance(image, str) else {"b64_json": base64.b64encode(image).decode()}
        for image in images
    ]
    return json.dumps({"data": items, "usage": {"total_tokens": 3}}).encode()


def output_line(custom_id: Any, body: Any, status: Any = 200) -> bytes:
    """One line of a Batch API output file."""
    response = {"status_code": status, "request_id": "r", "body": body}
    return json.dumps({"id": "l", "custom_id": custom_id, "response": response}).encode() + b"\n"


def output_file(tmp_path: Path, *lines: bytes) -> IO[bytes]:
    file = (tmp_path / "output.jsonl").open("w+b")
    file.write(b"".join(lines))
    file.seek(0)
    return file


def test_a_batch_output_file_is_read_a_line_at_a_time_into_the_store(tmp_path: Path) -> None:
    image, other = png(1), png(2)
    answered = json.loads(images_body(image, "http://x/a.png"))
    lines = [
        output_line("req-1", answered),
        b"not JSON\n",
        output_line("req-2", json.loads(images_body(other)), status=500),
        output_line("not wanted", json.loads(images_body(other))),
        output_line("req-3", {"data": [{"revised_prompt": "neither b64_json nor url"}]}),
        b'{"custom_id": "req-4", "error": {"code": "batch_expired", "message": "late"}}',
    ]
    (tmp_path / "store").mkdir()
    store = ImageStore(tmp_path / "store")
    with output_file(tmp_path, *lines) as file:
        read = store.read_batch_output(file.fileno(), {"req-1", "req-2", "req-3", "req-4"})
    first, *whole = read
    assert (first.custom_id, first.line) == ("req-1", None) and first.answer is not None
    stored, url = first.answer.images
    assert isinstance(stored, StoredImage) and stored.read() == image and url is None
    assert first.answer.urls == [None, "http://x/a.png"]
    assert first.answer.usage == '{"total_tokens": 3}'
    # Anything else is the line as read, for the caller to decode (the native reader
    # takes only 200 answers it can read); only `req-1`'s image was stored.
    assert [(line.custom_id, line.answer, line.line) for line in whole] == [
        (None, None, lines[2]),
        (None, None, lines[4]),
        (None, None, lines[5]),
    ]
    assert [path.name for path in store.folder.iterdir()] == [stored.path.rsplit("/")[-1]]
    for closed in (-1, 1 << 30):  # no descriptor, and one not open
        with pytest.raises(ReadError, match="could not read the file"):
            store.read_batch_output(closed, {"req-1"})


def test_a_spool_keeps_an_image_once_until_its_last_holder_reads_it(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "left-by-a-crash").write_bytes(b"x")
    spool = Spool(tmp_path / "spool")
    assert list(spool.folder.iterdir()) == []
    image = png(1)
    body = json.loads(images_body(image, image, "http://x/a.png"))
    with output_file(tmp_path, output_line("req-1", body)) as file:
        [line] = spool.read_batch_output(file, {"req-1"})
    answer = line.answer
    assert line.custom_id == "req-1" and answer is not None
    first, second, url = answer.images
    assert isinstance(first, SpooledImage) and isinstance(second, SpooledImage)
    assert first == second and first.size == len(image) and url is None
    assert (answer.urls, answer.usage) == ([None, None, "http://x/a.png"], '{"total_tokens": 3}')
    name = f"{hashlib.sha256(image).hexdigest()}.png"
    assert [path.name for path in spool.folder.iterdir()] == [name] and spool.held() == 1
    assert first.read() == image and first.path.exists()
    second.release()
    assert not first.path.exists() and spool.held() == 0
    with pytest.raises(ValueError, match="was already given up"):
        first.read()


def test_a_spool_hands_a_body_of_another_shape_back_and_keeps_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    line = output_line("req-1", {})
    with output_file(tmp_path, line) as file:
        assert spool.read_batch_output(file, {"req-1"}) == [SpooledLine(None, None, line)]
    assert list(spool.folder.iterdir()) == [] and spool.held() == 0


NOT_IMAGES = "a malformed answer: `data` is not a list of image objects"


def _with_body(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A `mangle` that sets fields of a 200 answer's body."""

    def mangle(record: dict[str, Any]) -> dict[str, Any]:
        response = record["response"]
        return {**record, "response": {**response, "body": {**response["body"], **fields}}}

    return mangle


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (
            lambda record: {**record, "custom_id": [record["custom_id"]]},
            "batch job batch_0002 completed without answering this request",
        ),
        (
            lambda record: {**record, "custom_id": {"row": 1}},
            "batch job batch_0002 completed without answering this request",
        ),
        (_with_body(data=5), NOT_IMAGES),
        (_with_body(data=["x"]), NOT_IMAGES),
        (_with_body(data={"b64_json": "x"}), NOT_IMAGES),
        (
            _with_body(data=[{"b64_json": 5}]),
            "the server returned an image with no b64_json or url string",
        ),
        (
            lambda record: {**record, "response": None, "error": {"code": ["x"], "message": "m"}},
            "['x']: m",
        ),
        (
            lambda record: {**record, "response": {"status_code": 200, "body": [1]}},
            "a malformed answer: its body is not an object",
        ),
    ],
)
def test_a_malformed_answer_line_fails_only_its_request(
    server: BatchServer, mangle: Callable[[dict[str, Any]], dict[str, Any]], error: str
) -> None:
    server.mangle["a dog"] = mangle
    rows = generate(server, ["a cat", "a dog", "a cow"])
    assert errors(rows) == [None, MISSING + error, None]
    assert [row["prompt"] for row in rows] == ["a cat", "a dog", "a cow"]
    assert decoded(rows) == [server.served.images[0], server.served.images[2]]


def test_an_answer_with_a_malformed_usage_keeps_its_images(
    server: BatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.mangle["a dog"] = _with_body(usage=[1, 2])
    rows = generate(server, ["a cat", "a dog"])
    assert (
        "batch job batch_0002: the answer to row-1-part-0 has a `usage` that is not an object: "
        "its token counts are left out"
    ) in caplog.messages
    assert errors(rows) == [None, None]
    assert decoded(rows) == server.served.images
    assert rows[1][META][STATS] == {"image_bytes": len(decoded(rows)[1]), "images_in_request": 1}
    assert rows[0][META][STATS]["total_tokens"] == 102


def test_null_request_counts_in_a_poll_answer_are_not_an_error(
    server: BatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    def polled() -> list[str]:
        shown = [message for message in caplog.messages if " | " not in message]
        caplog.clear()
        return [message for message in shown if message.startswith("batch job ")]

    caplog.set_level(logging.INFO)
    generate(server, ["a cat", "a dog"])
    assert polled() == [
        "batch job batch_0002: in_progress, 0/2 requests done",
        "batch job batch_0002: finalizing, 2/2 requests done",
    ]
    server.null_counts = True
    rows = generate(server, ["a cat", "a dog"])
    assert errors(rows) == [None, None]
    assert decoded(rows) == server.served.images[2:]
    assert polled() == ["batch job batch_0005: in_progress", "batch job batch_0005: finalizing"]


@pytest.mark.parametrize(
    ("plan", "error"),
    [
        (Plan("expired", runs=1), EXPIRED),
        (Plan("cancelled", runs=1), "batch job batch_0002 cancelled before running this request"),
    ],
)
def test_an_expired_or_cancelled_job_fails_what_it_did_not_run(
    server: BatchServer, plan: Plan, error: str
) -> None:
    server.plans.append(plan)
    rows = generate(server, ["a cat", "a dog", "a cow"])
    assert errors(rows) == [None, MISSING + error, MISSING + error]
    assert server.statuses() == Counter({plan.ends: 1})
    assert len(server.jobs) == 1 and len(decoded(rows)) == 1


def test_requests_an_expired_job_did_not_run_are_sent_again_when_asked(
    server: BatchServer,
) -> None:
    server.plans.extend([Plan("expired", runs=1), Plan("cancelled", runs=0)])
    rows = generate(server, ["a cat", "a dog", "a cow"], resubmit_expired=2)
    assert errors(rows) == [None] * 3
    custom_ids = [[line["custom_id"] for line in lines] for lines in input_lines(server)]
    assert custom_ids == [
        ["row-0-part-0", "row-1-part-0", "row-2-part-0"],
        ["row-1-part-0", "row-2-part-0"],
        ["row-1-part-0", "row-2-part-0"],
    ]
    # Each image was made once: the requests were run once, by the third job.
    assert Counter(decoded(rows)) == Counter(server.served.images)
    assert len(server.served.images) == 3


def test_resubmission_stops_after_the_times_asked(server: BatchServer) -> None:
    server.plans.extend([Plan("expired", runs=0)] * 3)
    rows = generate(server, ["a cat"], resubmit_expired=1)
    assert errors(rows) == [MISSING + EXPIRED]
    assert len(server.jobs) == 2


def test_a_job_that_fails_validation_fails_its_rows_with_the_reasons(server: BatchServer) -> None:
    server.batch_models = {"gpt-image-1"}
    rows = generate(server, ["a", "b", "c", "d"], model="dall-e-2")
    reason = (
        "model_not_found: The model 'dall-e-2' does not exist or is not supported by the Batch API."
    )
    assert (
        errors(rows)
        == [
            MISSING + f"batch job batch_0002 failed: line 1: {reason}; line 2: {reason}; "
            f"line 3: {reason} (and 1 more)"
        ]
        * 4
    )
    assert server.statuses() == Counter({"failed": 1})
    assert server.served.images == []


def test_requests_are_split_into_jobs_within_the_limits(server: BatchServer) -> None:
    prompts = [f"prompt {i}" for i in range(5)]
    rows = generate(server, prompts, requests_per_job=2)
    jobs = sorted([line["custom_id"] for line in lines] for lines in input_lines(server))
    assert jobs == [
        ["row-0-part-0", "row-1-part-0"],
        ["row-2-part-0", "row-3-part-0"],
        ["row-4-part-0"],
    ]
    assert [row["prompt"] for row in rows] == prompts and errors(rows) == [None] * 5
    server.jobs.clear()
    # Each line is about 120 bytes: two do not fit in 200.
    rows = generate(server, prompts, bytes_per_job=200)
    assert [len(lines) for lines in input_lines(server)] == [1] * 5
    assert errors(rows) == [None] * 5


def test_url_answers_are_downloaded(server: BatchServer) -> None:
    task = ImageGeneration(
        image_generation_model=batch_model(
            server, model="dall-e-2", generation_kwargs={"response_format": "url"}
        ),
        num_generations=2,
        images_as_bytes=True,
    )
    rows = task.process_batch([{"prompt": "a cat"}])
    task.unload()
    assert Counter(row["image"] for row in rows) == Counter(server.served.images)


def test_a_lost_create_answer_does_not_create_a_second_job(server: BatchServer) -> None:
    server.create_faults.append(500)
    rows = generate(server, ["a cat", "a dog"])
    assert errors(rows) == [None, None]
    assert len(server.jobs) == 1 and 500 in server.served.statuses


def test_the_key_never_leaks(
    server: BatchServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wrong = "sk-wrong-key-that-must-stay-hidden-42"
    model = batch_model(server, output_dir=str(tmp_path), api_key=wrong, max_retries=0)
    task = ImageGeneration(image_generation_model=model)
    rows = task.process_batch([{"prompt": "a cat"}])
    task.unload()
    assert errors(rows)[0].startswith(MISSING + "upload failed: request failed after 1 attempt:")
    assert "**********" in errors(rows)[0]
    good = batch_model(server, output_dir=str(tmp_path / "good"))
    task = ImageGeneration(image_generation_model=good)
    task.load()
    assert errors(task.process_batch([{"prompt": "a cat"}])) == [None]
    task.unload()
    shown = [json.dumps(rows), caplog.text, repr(model), json.dumps(model.dump())]
    shown += [path.read_text() for path in tmp_path.rglob(JOURNAL)]
    shown += [upload.data.decode() for upload in server.uploads.values()]
    shown += [json.dumps(job.object) for job in server.jobs.values()]
    for text in shown:
        assert wrong not in text and KEY not in text
    assert "batch job batch_0002 submitted (1 request) | jobs: 1 submitted" in caplog.text


# --- resume: the journal ---------------------------------------------------------------


def test_a_batch_sent_again_reattaches_to_its_job_and_a_later_equal_one_does_not(
    server: BatchServer, tmp_path: Path
) -> None:
    def answers(model: OpenAIBatchImageGeneration, *batches: list[str]) -> list[list[bytes]]:
        model.load()
        try:
            return [
                [part["images"][0] for answer in model.generate(prompts) for part in answer]
                for prompts in batches
            ]
        finally:
            model.unload()

    [first] = answers(batch_model(server, output_dir=str(tmp_path)), ["a", "b"])
    # A new run (nothing written yet) sends the batch again: the same job answers.
    again, later = answers(batch_model(server, output_dir=str(tmp_path)), ["a", "b"], ["a", "b"])
    assert again == first and len(server.jobs) == 2
    assert len(set(later)) == 2 and not set(later) & set(first)
    # A model is told where a run starts: it does not read the run's checkpoint itself.
    write_checkpoint(
        tmp_path / CHECKPOINT,
        Checkpoint(
            version=VERSION,
            format="jsonl",
            task={"name": "t"},
            rows_in=2,
            rows_out=2,
            failed=0,
            seconds=0.0,
            complete=False,
            sink={"rows": 2, "bytes": 0},
        ),
    )
    [untold] = answers(batch_model(server, output_dir=str(tmp_path)), ["a", "b"])
    assert untold == first and len(server.jobs) == 2
    # A resumed run that had written the first batch: the same prompts after it are new.
    told = batch_model(server, output_dir=str(tmp_path))
    told.start_at(2)
    [resumed] = answers(told, ["a", "b"])
    assert resumed == later and len(server.jobs) == 2
    [fresh] = answers(batch_model(server, output_dir=str(tmp_path)), ["c", "d"])
    assert len(server.jobs) == 3 and not set(fresh) & set(first + later)


def test_a_record_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.reset(0)
    entry = journal.begin("k", 0, 2, 2)
    job = journal.uploaded(entry, "file-1", ["row-0-part-0", "row-1-part-0"], 1.0)
    journal.created(job, "batch_1")
    journal.close()
    path = tmp_path / JOURNAL
    whole = path.read_bytes()
    with path.open("ab") as file:
        file.write(b'{"delivered": 0')
    reopened = Journal(tmp_path)
    assert path.read_bytes() == whole
    reopened.reset(0)
    claimed = reopened.claim("k", 0)
    assert claimed is not None and claimed.delivered is None
    assert [(job.file, job.batch, job.custom_ids) for job in claimed.jobs] == [
        ("file-1", "batch_1", ["row-0-part-0", "row-1-part-0"])
    ]
    reopened.delivered(claimed)
    reopened.close()
    assert path.read_bytes() == whole + b'{"delivered":0}\n'


def _journal_with(tmp_path: Path, record: Any) -> Path:
    """A journal of one entry with one created job, then `record`; its path."""
    journal = Journal(tmp_path)
    entry = journal.begin("k", 0, 1, 1)
    journal.created(journal.uploaded(entry, "file-1", ["row-0-part-0"], 1.0), "batch_1")
    journal.close()
    path = tmp_path / JOURNAL
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"delivered": 5}, "no entry 5"),
        ({"delivered": -1}, "no entry -1"),
        ({"job": "file-2", "entry": 1, "custom_ids": ["row-0-part-0"], "time": 1.0}, "no entry 1"),
        ({"batch": "batch_2", "job": "file-2"}, "no job 'file-2'"),
        (
            {"entry": 3, "key": "k", "offset": 0, "rows": 1, "requests": 1},
            "entry 3 where entry 1 comes next",
        ),
    ],
)
def test_a_journal_record_naming_what_the_journal_lacks_is_one_clear_error(
    tmp_path: Path, record: dict[str, Any], why: str
) -> None:
    path = _journal_with(tmp_path, record)
    with pytest.raises(RunError) as raised:
        Journal(tmp_path)
    assert str(raised.value) == f"{path}, line 5: unreadable journal record: {why}"


@pytest.mark.parametrize(
    "record",
    [
        {"entry": 1, "key": "k", "offset": "0", "rows": 1, "requests": 1},
        {"job": "file-2", "entry": 0, "custom_ids": "row-0-part-0", "time": 1.0},
        {"batch": ["batch_2"], "job": "file-1"},
        {"delivered": "0"},
        {"delivered": True},
        ["delivered", 0],
    ],
)
def test_a_journal_record_of_the_wrong_shape_is_one_clear_error(
    tmp_path: Path, record: Any
) -> None:
    path = _journal_with(tmp_path, record)
    with pytest.raises(RunError) as raised:
        Journal(tmp_path)
    assert str(raised.value).startswith(f"{path}, line 5: unreadable journal record: ")


def test_a_journal_record_nested_too_deeply_is_one_clear_error(tmp_path: Path) -> None:
    path = _journal_with(tmp_path, "")
    path.write_bytes(path.read_bytes()[: -len(b'""\n')] + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    with pytest.raises(RunError) as raised:
        Journal(tmp_path)
    assert str(raised.value) == f"{path}, line 5: unreadable journal record: nested too deeply"


def test_a_resume_over_a_bad_journal_is_one_line_on_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    path = _journal_with(out / "batch-jobs", {"delivered": -1})
    source = tmp_path / "prompts.txt"
    source.write_text("a cat\n")
    args = ["generate", str(source), "-o", str(out), "--model", "openai-batch:gpt-image-1"]
    assert main([*args, "--base-url", "http://127.0.0.1:9/v1", "--resume"]) == 1
    assert capsys.readouterr().err == (
        f"imagetask: error: {path}, line 5: unreadable journal record: no entry -1\n"
    )


# --- the command: kill -9, Ctrl-C and resume -------------------------------------------


def command(server: BatchServer, source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "imagetask", "generate", str(source), "-o", str(out),
        "--model", "openai-batch:gpt-image-1", "--base-url", f"{server.url}/v1",
        "--batch-size", "4", "--jobs-in-flight", "3", "--poll-every", "0.02",
        "--checkpoint-every", "0", *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": KEY}


def prompt_file(folder: Path, prompts: list[str]) -> Path:
    """A prompts file in `folder`, one line each."""
    source = folder / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    return source


def resumed(server: BatchServer, source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The command resumed on the run in `out`, run to its successful end."""
    done = subprocess.run(
        [*command(server, source, out), "--resume"], env=environment(), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def read_rows(out: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]


def check_output(server: BatchServer, out: Path, prompts: list[str]) -> None:
    """Every row once, in input order, each with its own image, every request run once."""
    rows = read_rows(out)
    assert [row["prompt"] for row in rows] == prompts
    assert errors(rows) == [None] * len(prompts)
    assert Counter(decoded(rows)) == Counter(server.served.images)
    assert len(set(decoded(rows))) == len(prompts)
    assert server.submitted() == Counter((prompt, 1) for prompt in prompts)
    inputs = [job.object["input_file_id"] for job in server.jobs.values()]
    assert len(inputs) == len(set(inputs)) == -(-len(prompts) // 4)


def test_sigkill_while_jobs_run_then_resume(server: BatchServer, tmp_path: Path) -> None:
    # Rows 20-23 repeat rows 0-3: their batch has the very same requests as the first.
    prompts = [f"prompt {i % 20}" for i in range(24)]
    source, out = prompt_file(tmp_path, prompts), tmp_path / "out"
    server.release.clear()
    server.held_prompts = set(prompts[8:20])
    # Batches 0 and 1 end and are written; batches 2, 3 and 4 run, held.
    killed_when(
        command(server, source, out, "--quiet"),
        lambda: rows_done(out) == 8 and server.statuses()["in_progress"] == 3,
        env=environment(),
    )
    assert len(server.jobs) == 5
    server.release.set()
    resumed_run = resumed(server, source, out)
    check_output(server, out, prompts)
    assert resumed_run.stderr.count(" re-attached | ") == 3
    assert "jobs: 1 submitted, 3 re-attached, 0 running, 4 done | 16 images received" in (
        resumed_run.stderr
    )
    assert resumed_run.stdout.endswith(
        "24 rows in, 24 rows out (24 images, 0 failed, estimated cost unknown) -> "
        f"{out}/data.jsonl\nbrowse: imagetask gallery {out}\n"
    )


def test_sigkill_while_a_job_is_created_then_resume(server: BatchServer, tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(8)]
    source, out = prompt_file(tmp_path, prompts), tmp_path / "out"
    server.answer_creates.clear()
    # The server made the jobs, but the command dies before it hears their ids.
    killed_when(
        command(server, source, out, "--quiet"),
        lambda: server.held_creates == 2,
        env=environment(),
    )
    server.answer_creates.set()
    assert rows_done(out) == 0 and len(server.jobs) == 2
    resumed_run = resumed(server, source, out)
    check_output(server, out, prompts)
    assert resumed_run.stderr.count(" re-attached | ") == 2


def stored(out: Path) -> dict[str, list[str]]:
    """The images the run's store holds, by batch folder (whole files, named by their
    SHA-256)."""
    spool = out / ".spool"
    return {
        folder.name: sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
        for folder in (spool.iterdir() if spool.is_dir() else [])
    }


def test_sigkill_mid_download_with_answers_stored_then_resume(
    server: BatchServer, tmp_path: Path
) -> None:
    prompts = [f"prompt {i}" for i in range(12)]
    source, out = prompt_file(tmp_path, prompts), tmp_path / "out"
    # Batch 0 runs on, held; batch 1 is answered and waits in its store for batch 0;
    # batch 2's output file stops halfway through its download.
    server.release.clear()
    server.held_prompts = set(prompts[:4])
    server.downloads.clear()
    server.held_downloads = set(prompts[8:])
    killed_when(
        command(server, source, out, "--quiet"),
        lambda: server.downloads_held == 1 and len(stored(out).get("1", [])) == 4,
        env=environment(),
    )
    # Batches 1 and 2 were run: batch 1's store holds its four images, decoded.
    made = server.served.images[:]
    assert len(made) == 8
    names = {f"{hashlib.sha256(image).hexdigest()}.png" for image in made}
    # Only a batch that stored an image has a folder.
    held = stored(out)
    assert sorted(held) == ["1"]
    assert len(held["1"]) == 4 and set(held["1"]) < names
    assert not (out / "batch-jobs" / "spool").exists()
    assert rows_done(out) == 0 and len(server.jobs) == 3
    server.release.set()
    server.downloads.set()
    resumed_run = resumed(server, source, out)
    check_output(server, out, prompts)
    assert resumed_run.stderr.count(" re-attached | ") == 3
    # The images answered before the kill are the rows' own, not made again.
    assert set(made) <= set(decoded(read_rows(out)))
    assert sorted(path.name for path in (out / "batch-jobs").iterdir()) == [JOURNAL]
    assert not (out / ".spool").exists()


def test_ctrl_c_while_jobs_run_then_resume(server: BatchServer, tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(12)]
    source, out = prompt_file(tmp_path, prompts), tmp_path / "out"
    server.release.clear()
    process = subprocess.Popen(
        command(server, source, out, "--quiet"), env=environment(), stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for(lambda: server.statuses()["in_progress"] == 3, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    resume = shlex.join(["imagetask", *command(server, source, out, "--quiet")[3:], "--resume"])
    assert err == f"imagetask: interrupted after 0 input rows; to continue: {resume}\n"
    server.release.set()
    resumed = subprocess.run(
        [*command(server, source, out, "--quiet"), "--resume"], env=environment(),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    check_output(server, out, prompts)


def test_a_resume_with_another_batch_size_names_the_jobs_it_left(
    server: BatchServer, tmp_path: Path
) -> None:
    prompts = [f"prompt {i}" for i in range(8)]
    source, out = prompt_file(tmp_path, prompts), tmp_path / "out"
    server.release.clear()
    process = subprocess.Popen(
        command(server, source, out, "--quiet"), env=environment(), text=True
    )
    wait_for(lambda: server.statuses()["in_progress"] == 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = sorted(server.jobs)
    server.release.set()
    resumed = subprocess.run(
        [*command(server, source, out, "--quiet"), "--resume", "--batch-size", "2"],
        env=environment(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    # Its batches differ from the recorded ones: their jobs are not used, and it says so.
    warning, ids = resumed.stderr.rsplit(": ", 1)
    assert warning == (
        "imagetask: WARNING: 2 batch(es) of an earlier run were not sent again by this one, "
        "so their jobs were not re-attached (run with the same input and batch size to use "
        "them)"
    )
    assert sorted(ids.strip().split(", ")) == left
    assert server.submitted() == Counter({(prompt, 1): 2 for prompt in prompts})


RUN_WITH_INVALID_ROWS = """
import json, sys
from imagetask import ImageGeneration
from imagetask.models import ImageFile, OpenAIBatchImageGeneration

url, source, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "resume"
model = OpenAIBatchImageGeneration(
    model="gpt-image-1", base_url=url, output_dir=out, poll_interval=0.01, max_poll_interval=0.02
)
task = ImageGeneration(image_generation_model=model, input_batch_size=4, on_invalid_row="fail")
with open(source) as file:
    rows = json.load(file)
task.run(rows, out, resume=resume, batches_in_flight=3, checkpoint_seconds=0)
"""


def test_a_resume_after_invalid_rows_pays_no_answered_batch_twice(
    server: BatchServer, tmp_path: Path
) -> None:
    # Rows 1-3 and 5-7 lack their prompt: the batches hold 1, 1, 4 and 4 prompts.
    rows: list[dict[str, Any]] = [{"prompt": f"prompt {i}"} for i in range(16)]
    for index in (1, 2, 3, 5, 6, 7):
        rows[index] = {"text": f"no prompt {index}"}
    source, out = tmp_path / "rows.json", tmp_path / "out"
    source.write_text(json.dumps(rows))

    def start(mode: str) -> subprocess.Popen[str]:
        url = f"{server.url}/v1"
        script = [sys.executable, "-c", RUN_WITH_INVALID_ROWS, url, str(source), str(out), mode]
        return subprocess.Popen(script, env=environment(), stderr=subprocess.PIPE, text=True)

    def delivered() -> int:
        path = out / "batch-jobs" / JOURNAL
        return path.read_text().count('"delivered"') if path.exists() else 0

    server.release.clear()
    server.held_prompts = {"prompt 4"}
    process = start("new")
    # The first batch is written; the third and fourth are answered, the second is held.
    wait_for(lambda: rows_done(out) == 4 and delivered() == 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.stderr is not None
    process.stderr.close()
    assert len(server.jobs) == 4 and rows_done(out) == 4
    server.release.set()
    resumed = start("resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    written = [msgspec.json.decode(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    assert [row.get("prompt") for row in written] == [row.get("prompt") for row in rows]
    assert [row.get("text") for row in written] == [row.get("text") for row in rows]
    failed = [index for index, row in enumerate(written) if row["image"] is None]
    assert failed == [1, 2, 3, 5, 6, 7]
    assert Counter(decoded(written)) == Counter(server.served.images)
    # Every prompt was submitted once, in the four jobs of the first run.
    prompts = [row["prompt"] for row in rows if "prompt" in row]
    assert server.submitted() == Counter((prompt, 1) for prompt in prompts)
    assert len(server.jobs) == 4
    assert sum(upload.purpose == "batch" for upload in server.uploads.values()) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--poll-every", "5"], "imagetask: error: --poll-every is for openai-batch:<model>"),
        (
            ["--model", "openai-batch:gpt-image-1", "--jobs-in-flight", "0"],
            "imagetask: error: --jobs-in-flight must be at least 1, got 0",
        ),
        (
            ["--model", "openai-batch:gpt-image-1", "--poll-every", "0"],
            "imagetask: error: --poll-every must be more than 0, got 0",
        ),
        (
            ["--model", "openai-batch:gpt-image-1", "--resubmit-expired", "-1"],
            "imagetask: error: --resubmit-expired must be at least 0, got -1",
        ),
        (
            ["--model", "openai-batch:gpt-image-1", "--seed", "1"],
            "imagetask: error: --seed: the OpenAI Images API takes no seed",
        ),
        (
            ["--model", "openai-batch:"],
            "imagetask: error: --model: unknown model spec 'openai-batch:'",
        ),
    ],
)
def test_command_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a cat\n")
    assert main(["generate", str(source), "-o", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_help_lists_the_batch_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in (
        "openai-batch:<model>",
        "--jobs-in-flight N",
        "--poll-every SECONDS",
        "--resubmit-expired N",
    ):
        assert option in text, option
