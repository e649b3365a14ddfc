"""OpenAI Batch API backend (`imagetask[openai]`): the Images API at half the price, with
answers within 24 hours, resumable without paying twice."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

import msgspec

from imagetask._core import ImagesAnswer, ImageStore, OutputLine, StoredImage
from imagetask._runtime import Workers
from imagetask.config import RuntimeParameter
from imagetask.errors import ConfigError, RequestError
from imagetask.models._base import Answer, EditInput
from imagetask.models._budget import CostBudget
from imagetask.models._openai_images import OpenAIImageGeneration
from imagetask.models._store import answer_store, kept
from imagetask.models.openai_batch._journal import Entry, Job, Journal
from imagetask.models.openai_batch._spool import (
    SPOOL_DIR,
    Spool,
    SpooledAnswer,
    SpooledImage,
    SpooledLine,
)

if TYPE_CHECKING:
    from openai.types import Batch, BatchRequestCounts

__all__ = ["JOBS_DIR", "MAX_INPUT_BYTES", "MAX_REQUESTS_PER_JOB", "OpenAIBatchImageGeneration"]

T = TypeVar("T")

ENDPOINT = "/v1/images/generations"
JOBS_DIR = "batch-jobs"
"""The folder, in the run's output folder, of the journal of the submitted jobs."""
MAX_REQUESTS_PER_JOB = 50_000
"""The most requests the Batch API takes in one input file."""
MAX_INPUT_BYTES = 200_000_000
"""The largest input file the Batch API takes (200 MB)."""

_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
_LOOKBACK = 3600.0
_SHOWN_ERRORS = 3
_JSONL = "application/jsonl"
_CHUNK_BYTES = 1 << 20
"""The most bytes of a downloaded file held at once on its way to disk."""

logger = logging.getLogger(__name__)

_Image = str | bytes | StoredImage | SpooledImage
"""An answered image: stored (a run's store, or the backend's spool), or as the server
sent it (base64 text that decodes to no image, bytes in no known format)."""
_Line = OutputLine | SpooledLine
"""A line of an output or error file as read natively (`ImageStore.read_batch_output`
into a run's store, or `Spool.read_batch_output`)."""


@dataclass(frozen=True)
class _Request:
    """One line of an input file: `count` images for input `row`."""

    custom_id: str
    row: int
    count: int
    body: dict[str, Any]
    line: bytes


@dataclass(frozen=True)
class _Item:
    """One image of an answer: the image (`None`: to be downloaded from `url`, or neither
    given), and the prompt the server says it drew."""

    image: _Image | None
    url: str | None
    revised_prompt: str | None


@dataclass(frozen=True)
class _Answered:
    """A request's answer: its images and its token `usage`."""

    items: list[_Item]
    usage: dict[str, Any]


@dataclass(frozen=True)
class _Outcome:
    """What became of one request: its answer, or why there is none.

    `not_run`: its job expired or was cancelled before running it (it may be sent again).
    """

    batch: str | None
    answer: _Answered | None = None
    error: str | None = None
    not_run: bool = False


class _Progress:
    """Counts of this run's jobs and images, logged (INFO) with every change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.submitted = self.reattached = self.running = self.done = 0
        self.images = self.failed = 0

    def event(self, message: str, **changes: int) -> None:
        with self._lock:
            for name, change in changes.items():
                setattr(self, name, getattr(self, name) + change)
            counts = (
                f"jobs: {self.submitted} submitted, {self.reattached} re-attached, "
                f"{self.running} running, {self.done} done | {self.images:,} images received, "
                f"{self.failed:,} requests failed"
            )
        logger.info("%s | %s", message, counts)


def _error_text(code: Any, message: Any) -> str:
    parts = [str(value) for value in (code, message) if value]
    return ": ".join(parts) or "no detail"


def _usage(batch: str, custom_id: str, usage: Any) -> dict[str, Any]:
    """An answer's `usage` (`None`: none); one that is not an object is left out."""
    if usage is None:
        return {}
    if not isinstance(usage, dict):
        logger.warning(
            "batch job %s: the answer to %s has a `usage` that is not an object: its token "
            "counts are left out",
            batch,
            custom_id,
        )
        return {}
    return usage


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _sent_item(item: dict[str, Any]) -> _Item:
    """An image object of a decoded body, its `b64_json` kept as text."""
    return _Item(
        _text(item.get("b64_json")), _text(item.get("url")), _text(item.get("revised_prompt"))
    )


def _answer_outcome(batch: str, custom_id: str, body: Any) -> _Outcome:
    """The outcome of a 200 answer whose body the native reader did not take, decoded:
    its images as sent, or an error when the body cannot be read (a `usage` that is not
    an object is left out, the images kept)."""
    if not isinstance(body, dict):
        return _Outcome(batch, error="a malformed answer: its body is not an object")
    data = body.get("data")
    if data is not None and not (
        isinstance(data, list) and all(isinstance(item, dict) for item in data)
    ):
        return _Outcome(batch, error="a malformed answer: `data` is not a list of image objects")
    items = [_sent_item(item) for item in data or []]
    return _Outcome(batch, answer=_Answered(items, _usage(batch, custom_id, body.get("usage"))))


def _read_outcome(batch: str, custom_id: str, read: ImagesAnswer | SpooledAnswer) -> _Outcome:
    """The outcome of a 200 answer read natively, its images stored."""
    items = [
        _Item(image, url, revised)
        for image, url, revised in zip(read.images, read.urls, read.revised_prompts, strict=True)
    ]
    usage = None if read.usage is None else msgspec.json.decode(read.usage)
    return _Outcome(batch, answer=_Answered(items, _usage(batch, custom_id, usage)))


def _line_outcome(batch: str, custom_id: str, line: dict[str, Any]) -> _Outcome:
    """The outcome of one line of an output or error file (a malformed line fails only
    its request)."""
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict) and response.get("status_code") == 200:
        return _answer_outcome(batch, custom_id, response.get("body"))
    if isinstance(error, dict) and error:
        code = error.get("code")
        text = _error_text(code, error.get("message"))
        return _Outcome(batch, error=text, not_run=isinstance(code, str) and code in _NOT_RUN)
    if isinstance(response, dict):
        body = response.get("body")
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        text = _error_text(detail.get("code"), detail.get("message"))
        return _Outcome(batch, error=f"HTTP {response.get('status_code')}: {text}")
    return _Outcome(batch, error="an answer with neither a response nor an error")


def _output_line(batch: str, line: _Line, wanted: set[str]) -> tuple[str, _Outcome] | None:
    """The `custom_id` and outcome of one line of an output or error file (`None`: not
    JSON, or no wanted request's): a 200 answer read natively (its images never Python
    text), or any other line, decoded whole."""
    if line.custom_id is not None and line.answer is not None:
        return line.custom_id, _read_outcome(batch, line.custom_id, line.answer)
    try:
        whole = msgspec.json.decode(line.line or b"")
    except msgspec.DecodeError:
        return None
    custom_id = whole.get("custom_id") if isinstance(whole, dict) else None
    if not (isinstance(custom_id, str) and custom_id in wanted):
        return None
    return custom_id, _line_outcome(batch, custom_id, whole)


def _release(outcome: _Outcome) -> None:
    """Gives up the spooled images of an outcome that will not be delivered (the images
    of a run's store stay until the run removes them)."""
    for item in outcome.answer.items if outcome.answer is not None else []:
        if isinstance(item.image, SpooledImage):
            item.image.release()


def _image_bytes(image: _Image) -> int:
    """The bytes of an image (base64 text counted as the bytes it encodes)."""
    if isinstance(image, (StoredImage, SpooledImage)):
        return image.size
    if isinstance(image, bytes):
        return len(image)
    return len(image) * 3 // 4 - image[-2:].count("=")


def _count(counts: BatchRequestCounts | None, name: str) -> int | None:
    """One of a poll answer's request counts (`None` when it has no number there)."""
    value = getattr(counts, name, None)
    return value if isinstance(value, int) else None


def _batch_errors(batch: Batch) -> str:
    errors = list(batch.errors.data or []) if batch.errors is not None else []
    shown = []
    for error in errors[:_SHOWN_ERRORS]:
        where = f"line {error.line}: " if error.line is not None else ""
        shown.append(where + _error_text(error.code, error.message))
    more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
    return "; ".join(shown) + more if shown else "no reason given"


class OpenAIBatchImageGeneration(OpenAIImageGeneration):
    """Images from `POST /v1/images/generations` through OpenAI's Batch API: half the
    price of the same requests sent one by one, answered within a 24-hour window.

    The request bodies are those of `OpenAIImageGeneration` (only the parameters set;
    `num_generations` split into requests of `images_per_request`), one line each in a
    JSONL file uploaded with purpose `batch`, its `custom_id` naming the input row and
    the request's part (`row-3-part-0`). Each `generate` call (one batch of the run)
    becomes one job, or several when its requests exceed `requests_per_job` or 200 MB;
    its jobs are polled (first after `poll_interval` seconds, the wait doubling up to
    `max_poll_interval`) until they end, then their output and error files are read.

    A request's images become its input's generations; an error line (such as
    `moderation_blocked`), a request missing from both files, or a job that failed, expired
    or was cancelled makes failure rows for that request's images only, with the error
    text. Requests an expired or cancelled job did not run are submitted again up to
    `resubmit_expired` times. Each image's raw output holds its job's `batch_id` and its
    `custom_id`; its statistics the request's token `usage`.

    An output file is downloaded to disk and read a line at a time; each answer's body
    is read natively (JSON, base64 and SHA-256 in Rust, without the GIL), each image
    written once to the image store the run gives (its artifacts folder, or the batch's
    spool: the answers then hold `StoredImage` handles, and the run removes the spooled
    files once the batch's rows are written), or, outside a run, to a spool of the
    backend's own in `batch-jobs/spool` whose images the answers hand over when their
    rows are built (`ImageFile`).

    It does not edit images: the Batch API lists `/v1/images/edits` among its endpoints,
    but a job is a JSONL file of JSON request bodies, and an edit uploads its images as
    multipart form data, so `edit` raises `ConfigError` before any request (edit with
    `OpenAIImageGeneration`).

    Resume: every job's input file and id are appended to
    `<output_dir>/batch-jobs/journal.jsonl` and synced before anything else happens. A
    batch the resumed run sends again (the same prompts, model and parameters, in the
    same order, at the same place in the run) re-attaches to the jobs recorded for it
    instead of submitting them again: resume with the same input and batch size. The
    run tells the model where it starts before loading it (`start_at`: the input rows its
    checkpoint records), so that a batch with the very same prompts after the recorded
    ones gets jobs of its own; a model that is not told loads as for a new run.
    Without `output_dir` the journal is kept in memory only.

    Parameters
    ----------
    output_dir:
        The run's output folder (`task.run(rows, output_dir)`, `imagetask generate -o`).
    requests_per_job, bytes_per_job:
        The most requests in one job, and the largest input file (the API takes at most
        50,000 requests and 200 MB).
    poll_interval, max_poll_interval:
        The first and the longest wait between two polls of a job, in seconds.
    resubmit_expired:
        How many times a request that an expired or cancelled job did not run is
        submitted again (0: it becomes failure rows).
    """

    output_dir: RuntimeParameter[str | None] = None
    requests_per_job: Annotated[int, msgspec.Meta(ge=1, le=MAX_REQUESTS_PER_JOB)] = (
        MAX_REQUESTS_PER_JOB
    )
    bytes_per_job: Annotated[int, msgspec.Meta(ge=1, le=MAX_INPUT_BYTES)] = MAX_INPUT_BYTES
    poll_interval: RuntimeParameter[Annotated[float, msgspec.Meta(gt=0)]] = 5.0
    max_poll_interval: RuntimeParameter[Annotated[float, msgspec.Meta(gt=0)]] = 300.0
    resubmit_expired: Annotated[int, msgspec.Meta(ge=0)] = 0

    takes_position: ClassVar[bool] = True
    _reads_answers_whole: ClassVar[bool] = False  # output files are streamed to disk

    def __post_init__(self) -> None:
        super().__post_init__()
        for limit in ("requests_per_minute", "images_per_minute"):
            if getattr(self, limit) is not None:
                raise ConfigError(
                    f"{type(self).__name__}: `{limit}` does not apply: the Batch API runs a "
                    "job's requests at OpenAI, at no rate of ours"
                )
        if self.max_poll_interval < self.poll_interval:
            raise ConfigError(
                f"{type(self).__name__}: `max_poll_interval` ({self.max_poll_interval:g}) "
                f"is less than `poll_interval` ({self.poll_interval:g})"
            )
        if not hasattr(self, "_state_lock"):
            self._state_lock = threading.Lock()
            self._open_reader: Workers | None = None
            self._open_journal: Journal | None = None
            self._open_spool: Spool | None = None
            self._progress = _Progress()
            self._offset = 0
            self._start: int | None = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start_at(self, position: int | None) -> None:
        """Tells the model, before `load()`, where the run that loads it starts: the input
        rows its output already holds (0: a new run; `None`: not known). `load()` takes
        it, and a later `load()` not told again starts at 0."""
        with self._state_lock:
            self._start = position

    def load(self) -> None:
        """Checks that there is an API key and opens the journal; a new run may re-attach
        to every job it records."""
        super().load()
        with self._state_lock:
            start = self._start if self.output_dir is not None else None
            self._start = 0
        self._journal().reset(start)
        with self._state_lock:
            self._offset = start or 0
        self._progress = _Progress()
        self._close_spool()
        jobs = self.jobs_dir
        if jobs is not None:
            # What a killed process left in the spool: no answer holds it now.
            shutil.rmtree(jobs / SPOOL_DIR, ignore_errors=True)

    def unload(self) -> None:
        """Stops waiting for the jobs (they go on at OpenAI, and a resumed run re-attaches
        to them), closes the clients and the journal."""
        if self._loop.started:
            self._loop.run(_cancel_other_tasks())
        super().unload()
        self._close_spool()
        with self._state_lock:
            reader, self._open_reader = self._open_reader, None
        if reader is not None:
            reader.shutdown()
        with self._state_lock:
            journal = self._open_journal
            if journal is not None and journal.path is not None:
                self._open_journal = None
        if journal is None:
            return
        left = journal.left_over()
        if left:
            ids = [job.batch or job.file for entry in left for job in entry.jobs]
            logger.warning(
                "%d batch(es) of an earlier run were not sent again by this one, so their "
                "jobs were not re-attached (run with the same input and batch size to use "
                "them): %s",
                len(left),
                ", ".join(ids) or "no job submitted yet",
            )
        if journal.path is not None:
            journal.close()

    def idle_slots(self) -> int:
        """No slot to spare: a job's requests wait at OpenAI, not for a slot here, so a
        run keeps to `batches_in_flight` jobs instead of submitting more while one runs."""
        return 0

    def use_budget(self, budget: CostBudget | None) -> None:
        """Refuses a budget: the requests go in batch jobs, which run whole once
        submitted, so none can be held back when the budget is reached."""
        if budget is not None:
            raise ConfigError(
                f"max_cost: {type(self).__name__} sends its requests in batch jobs, which "
                "run whole once submitted: run it without max_cost"
            )

    @property
    def jobs_dir(self) -> Path | None:
        """The folder of the journal, of downloads in progress and of the spool."""
        return None if self.output_dir is None else Path(self.output_dir) / JOBS_DIR

    def _spool(self) -> Spool:
        """The spool of the answered images outside a run, made when first needed (in
        `jobs_dir`, else in a temporary folder)."""
        with self._state_lock:
            if self._open_spool is None:
                jobs = self.jobs_dir
                folder = (
                    jobs / SPOOL_DIR
                    if jobs is not None
                    else Path(tempfile.mkdtemp(prefix="imagetask-spool-"))
                )
                self._open_spool = Spool(folder)
            return self._open_spool

    def _reader(self) -> Workers:
        """The one thread that reads the output files, one at a time whatever the jobs
        in flight: an answer line and its decoded image are what reading holds, in the
        memory of one thread, reused from one file to the next."""
        with self._state_lock:
            if self._open_reader is None:
                self._open_reader = Workers(1, "imagetask-batch-reader")
            return self._open_reader

    def _close_spool(self) -> None:
        """Deletes the spool and the images of batches whose rows were never built."""
        with self._state_lock:
            spool, self._open_spool = self._open_spool, None
        if spool is not None:
            spool.remove()

    def _journal(self) -> Journal:
        with self._state_lock:
            if self._open_journal is None:
                if self.output_dir is None:
                    logger.warning(
                        "%s: no `output_dir`: the submitted jobs are recorded in memory only, "
                        "and a crash loses track of them",
                        type(self).__name__,
                    )
                self._open_journal = Journal(self.jobs_dir)
            return self._open_journal

    # --- generate -----------------------------------------------------------------------

    def _check_edits(self, inputs: Sequence[EditInput]) -> None:
        raise ConfigError(
            f"{type(self).__name__} does not edit images: a Batch API job is a JSONL file "
            "of JSON request bodies, and an edit uploads its images to /v1/images/edits as "
            "multipart form data; edit with OpenAIImageGeneration"
        )

    async def agenerate(self, input: str, num_generations: int = 1, **kwargs: Any) -> Answer:
        [answer] = await self.agenerate_batch([input], num_generations, **kwargs)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def agenerate_batch(
        self,
        inputs: list[str],
        num_generations: int = 1,
        *,
        position: int | None = None,
        **kwargs: Any,
    ) -> list[Answer | BaseException]:
        """Answers every input through batch jobs: those recorded for this very batch, or
        new ones. `position`: how many input rows of the run come before the batch (the
        runner passes it; otherwise the inputs of the earlier calls are counted)."""
        if not inputs:
            return []
        requests = self._requests(inputs, num_generations, kwargs)
        key = hashlib.sha256(b"".join(request.line for request in requests)).hexdigest()
        journal = self._journal()
        with self._state_lock:
            offset = self._offset if position is None else position
            self._offset += len(inputs)
        entry = journal.claim(key, offset) or journal.begin(key, offset, len(inputs), len(requests))
        outcomes = await self._settle(entry, requests)
        answers: list[Answer | BaseException] = [[] for _ in inputs]
        parts = await asyncio.gather(
            *(self._request_parts(request, outcomes[request.custom_id]) for request in requests)
        )
        for request, request_parts in zip(requests, parts, strict=True):
            answer = answers[request.row]
            assert isinstance(answer, list)
            answer.extend(request_parts)
        journal.delivered(entry)
        return answers

    def _requests(
        self, inputs: list[str], num_generations: int, kwargs: dict[str, Any]
    ) -> list[_Request]:
        """The requests of a batch, in order: `OpenAIImageGeneration`'s bodies."""
        per = self._per_request()
        params = {name: value for name, value in kwargs.items() if name != "extra_body"}
        params.update(kwargs.get("extra_body") or {})
        requests = []
        for row, prompt in enumerate(inputs):
            for part, start in enumerate(range(0, num_generations, per)):
                count = min(per, num_generations - start)
                body: dict[str, Any] = {"model": self.model, "prompt": prompt, **params}
                if count > 1:
                    body["n"] = count
                custom_id = f"row-{row}-part-{part}"
                line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
                encoded = json.dumps(line, sort_keys=True, separators=(",", ":")).encode()
                requests.append(_Request(custom_id, row, count, body, encoded + b"\n"))
        return requests

    def _chunks(self, requests: list[_Request]) -> list[list[_Request]]:
        """The requests split into input files within the API's limits."""
        chunks: list[list[_Request]] = []
        size = 0
        for request in requests:
            if (
                not chunks
                or len(chunks[-1]) >= self.requests_per_job
                or size + len(request.line) > self.bytes_per_job
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(request)
            size += len(request.line)
        return chunks

    async def _settle(self, entry: Entry, requests: list[_Request]) -> dict[str, _Outcome]:
        """Runs the entry's recorded jobs and new ones for its requests no job holds, then
        sends again what expired or cancelled jobs did not run (`resubmit_expired`)."""
        attempts: Counter[str] = Counter()
        for job in entry.jobs:
            attempts.update(job.custom_ids)
        recorded = [self._finish(job, recorded=True) for job in entry.jobs]
        todo = [request for request in requests if request.custom_id not in attempts]
        outcomes: dict[str, _Outcome] = {}
        while True:
            for chunk in self._chunks(todo):
                attempts.update(request.custom_id for request in chunk)
                recorded.append(self._submit(entry, chunk))
            for job_outcomes in await asyncio.gather(*recorded):
                outcomes.update(job_outcomes)
            todo = [
                request
                for request in requests
                if outcomes[request.custom_id].not_run
                and attempts[request.custom_id] <= self.resubmit_expired
            ]
            if not todo:
                return outcomes
            logger.info("sending again %d request(s) that did not run", len(todo))
            recorded = []

    async def _submit(self, entry: Entry, chunk: list[_Request]) -> dict[str, _Outcome]:
        """Uploads one input file, records it, creates its job and waits for it."""
        client = self._client()
        data = b"".join(request.line for request in chunk)
        name = f"imagetask-{entry.key[:16]}-{entry.id}.jsonl"
        started = time.time()
        try:
            uploaded = await self._retry(
                lambda: client.files.create(file=(name, data, _JSONL), purpose="batch"),
                patient=False,
                timeout=None,
            )
        except RequestError as exc:
            return {
                request.custom_id: _Outcome(None, error=f"upload failed: {exc}")
                for request in chunk
            }
        job = self._journal().uploaded(
            entry, uploaded.id, [request.custom_id for request in chunk], started
        )
        return await self._finish(job, recorded=False)

    async def _finish(self, job: Job, *, recorded: bool) -> dict[str, _Outcome]:
        """Creates the job if it has no id yet (a recorded one only if no job was created
        from its file), waits until it ends and reads its answers."""
        running = 0
        try:
            # A job found from its file was submitted by an earlier run if it was recorded.
            reattached = job.batch is not None or (
                await self._create(job, look_first=recorded) and recorded
            )
            assert job.batch is not None
            running = 1
            if reattached:
                self._progress.event(f"batch job {job.batch} re-attached", reattached=1, running=1)
            else:
                count = len(job.custom_ids)
                what = f"batch job {job.batch} submitted ({count:,} request{'s' * (count > 1)})"
                self._progress.event(what, submitted=1, running=1)
            batch = await self._wait(job.batch)
        except RequestError as exc:
            self._progress.event(
                f"batch job {job.batch or job.file} lost: {exc}",
                running=-running,
                done=running,
                failed=len(job.custom_ids),
            )
            return {custom_id: _Outcome(job.batch, error=str(exc)) for custom_id in job.custom_ids}
        return await self._collect(batch, job)

    async def _create(self, job: Job, *, look_first: bool) -> bool:
        """Creates the job of `job.file` and records its id. When a job may already have
        been created from that file (a recorded file, or an attempt whose answer was
        lost), that one is used instead of creating a second; returns whether it was."""
        client = self._client()
        look = look_first
        found: Batch | None = None

        async def create() -> Batch:
            nonlocal look, found
            if look:
                found = await self._find(job)
                if found is not None:
                    return found
            look = True
            return await client.batches.create(
                input_file_id=job.file,
                endpoint=ENDPOINT,  # type: ignore[arg-type]
                completion_window="24h",
            )

        batch = await self._retry(create, patient=True, timeout=self.timeout)
        self._journal().created(job, batch.id)
        return found is not None

    async def _find(self, job: Job) -> Batch | None:
        """The job created from `job.file`, if any (the list is newest first)."""
        async for batch in self._client().batches.list(limit=100):
            if batch.input_file_id == job.file:
                return batch
            if batch.created_at < job.time - _LOOKBACK:
                return None
        return None

    async def _wait(self, batch_id: str) -> Batch:
        """Polls a job until it ends, logging its progress."""
        client = self._client()
        interval = self.poll_interval
        shown: tuple[str, int | None] | None = None
        while True:
            batch = await self._retry(
                lambda: client.batches.retrieve(batch_id), patient=True, timeout=self.timeout
            )
            counts = batch.request_counts
            completed, failed, total = (
                _count(counts, name) for name in ("completed", "failed", "total")
            )
            known = completed is not None or failed is not None
            done = (completed or 0) + (failed or 0) if known else None
            if shown is None or shown != (batch.status, done):
                if shown is not None and shown[0] != batch.status:
                    interval = self.poll_interval
                shown = (batch.status, done)
                if batch.status not in _TERMINAL:
                    of = f"/{total:,}" if total is not None else ""
                    how_far = f", {done}{of} requests done" if done is not None else ""
                    logger.info("batch job %s: %s%s", batch_id, batch.status, how_far)
            if batch.status in _TERMINAL:
                return batch
            await asyncio.sleep(interval)
            interval = min(interval * 2, self.max_poll_interval)

    async def _collect(self, batch: Batch, job: Job) -> dict[str, _Outcome]:
        """Reads the answers of an ended job (their images into the run's store, else
        the spool): every request of the job gets an outcome."""
        store = answer_store()
        wanted = set(job.custom_ids)
        outcomes: dict[str, _Outcome] = {}
        if batch.status == "failed":
            error = f"batch job {batch.id} failed: {self._masked(_batch_errors(batch))}"
            outcomes = {custom_id: _Outcome(batch.id, error=error) for custom_id in wanted}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id or batch.status == "failed":
                continue
            try:
                spool = await self._fetch(file_id)
            except RequestError as exc:
                error = f"the answers of batch job {batch.id} could not be read: {exc}"
                outcomes.update(
                    (custom_id, _Outcome(batch.id, error=error))
                    for custom_id in wanted
                    if custom_id not in outcomes
                )
                continue
            with spool:
                reading = self._reader().submit(
                    functools.partial(self._read_answers, batch.id, spool, wanted, store)
                )
                read = await asyncio.wrap_future(reading)
            for custom_id, outcome in read.items():
                if custom_id in outcomes:
                    _release(outcomes[custom_id])
                outcomes[custom_id] = outcome
        for custom_id in wanted - outcomes.keys():
            not_run = batch.status in ("expired", "cancelled")
            what = "before running this request" if not_run else "without answering this request"
            error = f"batch job {batch.id} {batch.status} {what}"
            outcomes[custom_id] = _Outcome(batch.id, error=error, not_run=not_run)
        images = sum(
            len(outcome.answer.items) for outcome in outcomes.values() if outcome.answer is not None
        )
        failed = sum(outcome.answer is None for outcome in outcomes.values())
        self._progress.event(
            f"batch job {batch.id} {batch.status}", running=-1, done=1, images=images, failed=failed
        )
        return outcomes

    def _read_answers(
        self, batch: str, file: IO[bytes], wanted: set[str], store: ImageStore | None
    ) -> dict[str, _Outcome]:
        """The outcomes of the `wanted` requests in an output or error file, read a line
        at a time, each answered image decoded once into `store` (`None`: the spool)
        (called on the reader's thread)."""
        lines: list[_Line] = (
            list(self._spool().read_batch_output(file, wanted))
            if store is None
            else list(store.read_batch_output(file.fileno(), wanted))
        )
        outcomes: dict[str, _Outcome] = {}
        for line in lines:
            read = _output_line(batch, line, wanted)
            if read is None:
                continue
            custom_id, outcome = read
            if outcome.error is not None:
                outcome = replace(outcome, error=self._masked(outcome.error))
            if custom_id in outcomes:
                _release(outcomes[custom_id])
            outcomes[custom_id] = outcome
        return outcomes

    async def _fetch(self, file_id: str) -> IO[bytes]:
        """Downloads a file into an anonymous temporary file (in `jobs_dir`), rewound."""
        client = self._client()
        folder = self.jobs_dir

        async def fetch() -> IO[bytes]:
            spool = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (returned open)
            try:
                async with client.files.with_streaming_response.content(file_id) as response:
                    async for chunk in response.iter_bytes(_CHUNK_BYTES):
                        spool.write(chunk)
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            return spool

        return await self._retry(fetch, patient=True, timeout=None)

    async def _request_parts(self, request: _Request, outcome: _Outcome) -> Answer:
        """The answer parts of one request: one per image, or one failed part."""
        ids = {"batch_id": outcome.batch} if outcome.batch is not None else {}
        ids["custom_id"] = request.custom_id
        failed = {"images": [None] * request.count, **ids}
        if outcome.answer is None:
            return [{**failed, "error": outcome.error}]
        items = outcome.answer.items
        if len(items) != request.count:
            _release(outcome)
            error = f"the server returned {len(items)} image(s) for n={request.count}"
            return [{**failed, "error": error}]
        answer: Answer = []
        for item in items:
            part: dict[str, Any] = {}
            image: _Image
            if item.image is not None:
                image = item.image
            elif item.url is not None:
                try:
                    downloaded = await self._download(item.url)
                except Exception as exc:
                    answer.append({"images": [None], **ids, "error": self._masked(str(exc))})
                    continue
                image = await kept(downloaded)
            else:
                error = "the server returned an image with no b64_json or url string"
                answer.append({"images": [None], **ids, "error": error})
                continue
            part["images"] = [image]
            if item.revised_prompt is not None:
                part["revised_prompt"] = item.revised_prompt
            if "seed" in request.body:
                part["seed"] = request.body["seed"]
            part.update(ids)
            part["statistics"] = {
                "image_bytes": _image_bytes(image),
                "images_in_request": request.count,
                **outcome.answer.usage,
            }
            answer.append(part)
        return answer

    # --- API calls ----------------------------------------------------------------------

    def _masked(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "**********")
        return text

    async def _retry(
        self, request: Callable[[], Awaitable[T]], *, patient: bool, timeout: float | None
    ) -> T:
        """One API call, its transient faults retried: `max_retries` times, or without end
        when `patient` (a job that is paid for is never given up for a lost connection)."""

        def report(error: RequestError, attempt: int) -> None:
            if attempt % 10 == 0:
                logger.warning("batch API call failed (%s); retrying", error)

        return await self._retrying(
            request,
            timeout=timeout,
            patient=patient,
            longest_wait=self.max_poll_interval,
            on_retry=report,
        )


async def _cancel_other_tasks() -> None:
    """Cancels every task of the running loop but this one, and waits for them."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
