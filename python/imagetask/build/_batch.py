"""A batch: the rows a task sends to its model together, on their way to output rows.

`task.prepare(rows)` checks the rows and formats their prompts; `batch.generate()` (or
`await batch.agenerate()`) asks the model for their images; `batch.finish()` builds the
output rows. `process_batch`, `agenerate` and the runner all go through these steps. A
batch knows its model, the images it asks per row (`n`) and the task's `OutputSchema`,
not the task: what it needs of the task's hooks it is given as functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from imagetask._core import AnswerFacts, answer_facts
from imagetask.errors import RequestRefused
from imagetask.models._store import StoringAnswers
from imagetask.outcome import BatchOutput, Cost, Failure, Row

if TYPE_CHECKING:
    from imagetask._core import ImageStore, RowBuilder
    from imagetask.build._schema import OutputSchema
    from imagetask.models import Answer, ImageModel

__all__ = ["Batch", "BatchOutput", "Failure", "ModelCall", "failures_not_logged"]

logger = logging.getLogger("imagetask")

Answers = Sequence["Answer | BaseException"] | BaseException
_LOGGED_FAILURES = 5


def _generation_kwargs(model: ImageModel) -> dict[str, Any]:
    get_kwargs = getattr(model, "get_generation_kwargs", None)
    return get_kwargs() if callable(get_kwargs) else {}


@contextmanager
def failures_not_logged() -> Iterator[None]:
    """Leaves the warnings of failed generations out of the log meanwhile (for work that
    counts them itself: `imagetask bench`, `check_task`)."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class ModelCall:
    """The model's part of a batch: the prompts of its valid rows, and the answers.

    Attributes
    ----------
    model:
        The model asked for the images.
    n:
        The images asked for each prompt (the task's `num_generations`).
    schema:
        The task's `OutputSchema` (its `task_name` names the task in log lines).
    size:
        How many input rows the batch holds.
    prompts:
        The prompt of every valid row, in order: what is sent to the model.
    answers:
        What the model returned for them (or the exception it raised), once generated.
    position:
        How many input rows of the run come before the batch's first (set by the runner),
        passed as `position` to a model that `takes_position`.
    names:
        How a row is named in log lines and errors, from its index in the batch (a run
        names the input file's line); `None`: `row <index>`.
    store:
        Where the answers put their images as they arrive (a run's, see
        `imagetask.run._spool`); `None`: the answers hold the images.
    """

    def __init__(
        self, model: ImageModel, n: int, schema: OutputSchema, prompts: list[str], size: int
    ) -> None:
        self.model = model
        self.n = n
        self.schema = schema
        self.prompts = prompts
        self.size = size
        self._answers: Answers = []
        self._facts_of_answers: AnswerFacts | None = None
        self.position: int | None = None
        self.names: Callable[[int], str] | None = None
        self.store: ImageStore | None = None

    @property
    def answers(self) -> Answers:
        """What the model returned for the prompts (or the exception it raised), once
        generated."""
        return self._answers

    @answers.setter
    def answers(self, answers: Answers) -> None:
        self._answers = answers
        self._facts_of_answers = None

    def _answer_facts(self) -> AnswerFacts:
        """The `AnswerFacts` of the answers, found once for each answers set."""
        if self._facts_of_answers is None:
            self._facts_of_answers = answer_facts(self._answers)
        return self._facts_of_answers

    def _kwargs(self, model: ImageModel) -> dict[str, Any]:
        """The keyword arguments of the model's call: its generation kwargs, and the
        batch's `position` when the model takes it."""
        kwargs = _generation_kwargs(model)
        if self.position is not None and getattr(model, "takes_position", False):
            kwargs["position"] = self.position
        return kwargs

    def where(self, row: int) -> str:
        """The name of the batch's row `row` (see `names`)."""
        return f"row {row}" if self.names is None else self.names(row)

    def generate(self) -> None:
        """Asks the model for the images of every prompt (in the calling thread): through
        `generate_batch` when it has one (a failed request is its own input's answer)."""
        if not self.prompts:
            return
        model = self.model
        generate_batch = getattr(model, "generate_batch", None)
        generate = generate_batch if callable(generate_batch) else model.generate
        self._ask(
            lambda: generate(inputs=self.prompts, num_generations=self.n, **self._kwargs(model))
        )

    async def agenerate(self) -> None:
        """`generate` on the running event loop: an async model's requests run on it, a
        synchronous model runs in a worker thread."""
        model = self.model
        agenerate_batch = getattr(model, "agenerate_batch", None)
        if not self.prompts:
            return
        if not callable(agenerate_batch):
            await asyncio.to_thread(self.generate)
            return
        await self._aask(lambda: agenerate_batch(self.prompts, self.n, **self._kwargs(model)))

    def _ask(self, ask: Callable[[], Answers]) -> None:
        """Keeps what the model's call `ask` returns as the answers (its images going to
        `store`), or the exception it raised (see `_failed`)."""
        try:
            with StoringAnswers(self.store):
                self.answers = ask()
        except MemoryError:
            raise
        except Exception as exc:
            self._failed(exc)

    async def _aask(self, ask: Callable[[], Awaitable[Answers]]) -> None:
        """`_ask` for a coroutine function."""
        try:
            with StoringAnswers(self.store):
                self.answers = await ask()
        except MemoryError:
            raise
        except Exception as exc:
            self._failed(exc)

    def _failed(self, error: Exception) -> None:
        """The model's call raised `error`: every row of the batch fails with it."""
        self.answers = error

    def cost(self) -> Cost:
        """The estimated cost of the answers: each image's `cost_usd` (in its part's
        statistics, when the backend priced it) summed."""
        facts = self._answer_facts()
        return Cost(facts.cost_usd, facts.priced_images)

    def image_bytes(self) -> int:
        """The length of the images among the answers (base64 text or bytes): 0 until
        the model answered. Found with the cost, once: an image in a file (read when the
        rows are built) counts its bytes only if they were read first."""
        return self._answer_facts().image_bytes

    def refusal(self) -> RequestRefused | None:
        """The first `RequestRefused` among the answers, if the model met one."""
        answers = self.answers
        if isinstance(answers, RequestRefused):
            return answers
        if isinstance(answers, BaseException):
            return None
        return next((a for a in answers if isinstance(a, RequestRefused)), None)

    def log(self, failures: list[Failure]) -> None:
        """Logs a batch's failed generations (the first few, then a count)."""
        name = self.schema.task_name
        for failure in failures[:_LOGGED_FAILURES]:
            logger.warning(
                "Task '%s' failed for %s, generation %d: %s",
                name,
                self.where(failure.row),
                failure.generation,
                failure.error,
            )
        if len(failures) > _LOGGED_FAILURES:
            logger.warning(
                "Task '%s': %d more failed generations in this batch",
                name,
                len(failures) - _LOGGED_FAILURES,
            )


class Batch(ModelCall):
    """One batch of input rows, prepared by its task (see the module's docstring).

    `builder` checks the rows and builds the output rows; `format_input` and
    `format_output` are the task's hooks it calls (`None`: its native ones);
    `complete_rows` does the task's work on the built rows (artifacts) and returns the
    generations it failed.
    """

    def __init__(
        self,
        rows: list[Row],
        *,
        model: ImageModel,
        n: int,
        schema: OutputSchema,
        builder: RowBuilder,
        format_input: Callable[[Row], str] | None,
        format_output: Callable[..., Row] | None,
        complete_rows: Callable[[list[Row]], list[Failure]],
    ) -> None:
        self._builder = builder
        self._format_output = format_output
        self._complete_rows = complete_rows
        self._prepared = builder.prepare(rows, format_input)
        super().__init__(model, n, schema, self._prepared.prompts, len(rows))

    def finish(self) -> BatchOutput:
        """Builds the output rows from the model's answers, does the task's work on them
        (artifacts) and logs the failed generations. An image the answers keep in a file
        (`ImageFile`) is read now, into its answer dict."""
        built, failed = self._builder.build(self._prepared, self.answers, self._format_output)
        failures = [Failure(*failure) for failure in failed]
        failures.extend(self._complete_rows(built))
        self.log(failures)
        return BatchOutput(built, failures)
