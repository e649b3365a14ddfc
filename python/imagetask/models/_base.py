"""The base classes every image generation backend derives from."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import urllib.parse
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import msgspec

from imagetask._runtime import BackgroundLoop
from imagetask.config import Configurable, RuntimeParameter
from imagetask.errors import (
    BudgetReached,
    ConfigError,
    InputRowError,
    RequestError,
    RequestRefused,
)
from imagetask.models._budget import CostBudget, RequestCost
from imagetask.models._rate_limit import RateLimits
from imagetask.models._requests import (
    backoff_delay,
    describe,
    limit_reset,
    refused,
    request_window,
    response_headers,
    retry_after,
    status_code,
    transient,
)

__all__ = [
    "Answer",
    "AsyncImageEditingModel",
    "AsyncImageGenerationModel",
    "EditInput",
    "ImageEditingModel",
    "ImageFile",
    "ImageGenerationModel",
    "ImageModel",
    "SourceImage",
    "check_edit_inputs",
]

T = TypeVar("T")
_BUDGET_POLL_SECONDS = 0.01
"""How often a request that waits for room in the budget looks again."""
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Dollars = Annotated[float, msgspec.Meta(ge=0)]

Answer = list[dict[str, Any]]
"""One input's answer: dicts of `{"images": [str | bytes | ImageFile, ...], ...}`."""


@runtime_checkable
class ImageFile(Protocol):
    """An answered image kept in a file until its batch's rows are built (in an answer's
    `images`, in place of its base64 text or bytes): its length in bytes, and `read()`,
    which hands its bytes over once."""

    @property
    def size(self) -> int: ...

    def read(self) -> bytes: ...


@runtime_checkable
class ImageModel(Protocol):
    """What a task needs of a backend; a distilabel image model is one as it is."""

    @property
    def model_name(self) -> str: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def generate(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> Sequence[Answer | BaseException]: ...


@dataclass(frozen=True, repr=False)
class SourceImage:
    """An image sent to a model: the file's bytes and their MIME type (`image/png`)."""

    data: bytes
    mime_type: str

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise ConfigError(f"SourceImage: `data` must be non-empty bytes, not {self.data!r:.40}")
        if not isinstance(self.mime_type, str) or not self.mime_type.startswith("image/"):
            raise ConfigError(f"SourceImage: `mime_type` {self.mime_type!r} is not image/...")

    def __repr__(self) -> str:
        return f"SourceImage({self.mime_type}, {len(self.data):,} bytes)"


@dataclass(frozen=True)
class EditInput:
    """One edit asked of a model: the instruction, the images it applies to (at least
    one) and an optional mask (on the first image: where it is transparent, the model
    edits)."""

    prompt: str
    images: tuple[SourceImage, ...]
    mask: SourceImage | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ConfigError(
                f"EditInput: `prompt` must be a str, not {type(self.prompt).__name__}"
            )
        images = tuple(self.images) if isinstance(self.images, (list, tuple)) else None
        if not images or not all(isinstance(image, SourceImage) for image in images):
            raise ConfigError("EditInput: `images` must be a non-empty list of SourceImage")
        if self.mask is not None and not isinstance(self.mask, SourceImage):
            raise ConfigError(
                f"EditInput: `mask` must be a SourceImage or None, not {type(self.mask).__name__}"
            )
        object.__setattr__(self, "images", images)


def check_edit_inputs(model: str, inputs: Sequence[Any]) -> None:
    """Raises `ConfigError` naming the first of `inputs` that is not an `EditInput`."""
    for index, input in enumerate(inputs):
        if not isinstance(input, EditInput):
            raise ConfigError(
                f"{model}: edit input {index} is a {type(input).__name__}, not an EditInput"
            )


@runtime_checkable
class ImageEditingModel(Protocol):
    """What an editing task needs of a backend: `edit` answers each input as
    `generate_batch` does (one answer per input, in the shape of a generation's; the
    exception of an input whose request failed for good as its answer)."""

    @property
    def model_name(self) -> str: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def edit(
        self, inputs: list[EditInput], num_generations: int = 1, **kwargs: Any
    ) -> Sequence[Answer | BaseException]: ...


class _Stopped(Exception):
    """Carries a `KeyboardInterrupt` or `SystemExit` out of a request: raised in a task
    as they are, they would stop the event loop itself instead of reaching the caller."""

    def __init__(self, interrupt: BaseException) -> None:
        super().__init__(interrupt)
        self.interrupt = interrupt


class _Gauge:
    """A count that several threads raise and lower: the requests being sent or waiting
    for a slot, whatever event loop runs them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, count: int) -> None:
        with self._lock:
            self.value += count

    @contextmanager
    def held(self) -> Iterator[None]:
        """Counts one more for the duration of the block."""
        self.add(1)
        try:
            yield
        finally:
            self.add(-1)


class _Unsent:
    """The inputs of a `generate_batch` call whose first request has not begun, counted
    in the gauge from the call on: while the loop is busy (making its client) before the
    requests start, they use slots, so a run does not start batch after batch meanwhile."""

    def __init__(self, gauge: _Gauge, count: int) -> None:
        self._lock = threading.Lock()
        self._gauge = gauge
        self._left = count
        gauge.add(count)

    def started(self) -> None:
        """One input's first request begins (it then counts as a request)."""
        self._uncount(1)

    def close(self) -> None:
        """The call ended: its inputs that sent nothing no longer count."""
        self._uncount(self._left)

    def _uncount(self, count: int) -> None:
        with self._lock:
            count = min(count, self._left)
            self._left -= count
        self._gauge.add(-count)


_BATCH_UNSENT: contextvars.ContextVar[_Unsent] = contextvars.ContextVar("_BATCH_UNSENT")
"""The `_Unsent` of the `generate_batch` call whose `agenerate_batch` runs."""
_INPUT_UNSENT: contextvars.ContextVar[list[_Unsent]] = contextvars.ContextVar("_INPUT_UNSENT")
"""Per input of a `generate_batch` call: its batch's `_Unsent` until its first request
begins (then the list is emptied, so the input's other requests count only as requests)."""


class ImageGenerationModel(Configurable, ABC):
    """A synchronous image generation backend.

    Subclasses implement `model_name` and `generate`, and may override `load` and
    `unload` to acquire and release resources.
    """

    generation_kwargs: RuntimeParameter[dict[str, Any]] = msgspec.field(default_factory=dict)

    takes_position: ClassVar[bool] = False
    """Whether `generate` takes `position`: how many input rows of the run come before
    the batch (a run passes it to a backend that resumes by it). Such a model may also
    have `start_at(position)`, which a run calls before `load()` with the input rows
    its output already holds (`None`: not known)."""

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The name recorded in the `model_name` column."""

    def load(self) -> None:
        """Acquires what `generate` needs (clients, weights)."""

    def unload(self) -> None:
        """Releases what `load` acquired."""

    @abstractmethod
    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Answer]:
        """Generates `num_generations` images per input; returns one answer per input."""

    def generate_outputs(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer]:
        """Same as `generate` (the name distilabel's tasks call)."""
        return self.generate(inputs=inputs, num_generations=num_generations, **kwargs)

    def get_generation_kwargs(self) -> dict[str, Any]:
        """The keyword arguments passed to every `generate` call."""
        return dict(self.generation_kwargs)


class AsyncImageGenerationModel(ImageGenerationModel):
    """A backend whose requests are coroutines, run concurrently on one event loop.

    Subclasses implement `agenerate` for one input. Every request goes through `_call`:
    at most `max_concurrency` requests are in flight at once (across all the batches that
    share the loop), each has `timeout` seconds, and a transient fault (429, 5xx, a
    timeout, a lost connection) is retried up to `max_retries` times with exponential
    backoff and jitter, waiting what the server's `Retry-After` asks when it says. With
    `requests_per_minute` or `images_per_minute` set, requests are spaced evenly to keep
    within them; a 429 holds every request not yet sent for as long as it asks.
    A subclass whose `agenerate` makes several requests calls `_call` for each and sets
    `_calls_requests = True`; otherwise each `agenerate` is treated as one request.
    With `price_per_image` set (US dollars), every image made costs that: it is the
    image's `cost_usd` in its statistics, whatever price table the backend has. Given
    a `CostBudget` (`use_budget`, what a run's `max_cost` does), each request reserves
    the most it can cost before it is sent and is not sent when that would pass the
    budget (see `CostBudget`): it raises `BudgetReached`, as do the requests after it.
    A refusal no retry changes (credentials, an unknown model) is not retried and raises
    `RequestRefused`. In `generate_batch` (what a task calls) an input whose request
    fails for good gets the error as its answer, so only its own rows fail; `generate`
    raises it, as distilabel's models do. An `agenerate` that lost only some of an
    input's images answers with a part `{"images": [None] * k, "error": "<why>"}` for
    them, so only those rows fail. Users sharing the model (runs in threads) each `load`
    and `unload` it: the last `unload` closes it.
    """

    max_concurrency: RuntimeParameter[PositiveInt] = 16
    max_retries: RuntimeParameter[Annotated[int, msgspec.Meta(ge=0)]] = 4
    timeout: RuntimeParameter[PositiveFloat] = 120.0
    retry_backoff: RuntimeParameter[PositiveFloat] = 0.5
    requests_per_minute: RuntimeParameter[PositiveFloat | None] = None
    images_per_minute: RuntimeParameter[PositiveFloat | None] = None
    price_per_image: RuntimeParameter[Dollars | None] = None

    _calls_requests: ClassVar[bool] = False
    _budget: CostBudget | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not hasattr(self, "_loop"):
            self._live()

    def _live(self) -> None:
        """A background loop of its own and no clients yet (made on first request)."""
        self._loop = BackgroundLoop()
        self._sending = _Gauge()
        self._refusal: RequestRefused | None = None
        self._limits = RateLimits(None, None)
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        """The fields (secrets included, as their own fields) without the loop and the
        clients, which belong to this process: a copy makes its own when it first runs."""
        state = dict(self.__dict__)
        for name in ("_loop", "_per_loop", "_sending", "_refusal", "_limits"):
            del state[name]
        state.pop("_budget", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._live()

    @abstractmethod
    async def agenerate(self, input: str, num_generations: int = 1, **kwargs: Any) -> Answer:
        """Generates `num_generations` images for one input."""

    def _secrets(self) -> list[str]:
        """Values that must never appear in an error message (API keys, the password and
        query string of a URL field)."""
        values = [getattr(self, name) for name in self.__secret__]
        for name in self.__url__:
            url = getattr(self, name)
            if isinstance(url, str):
                parts = urllib.parse.urlsplit(url)
                values += [parts.password, parts.query]
        return [value for value in values if isinstance(value, str) and value]

    def idle_slots(self) -> int:
        """How many of the `max_concurrency` request slots no request uses or waits for
        (a request waiting between retries holds none): a run that has more batches
        starts another rather than let them idle. None once a request was refused in a
        way no retry changes: more would be refused too."""
        if self._refusal is not None:
            return 0
        return max(self.max_concurrency - self._sending.value, 0)

    def _most_cost(
        self, prompt: str, images: int, kwargs: dict[str, Any], edit: bool
    ) -> float | None:
        """The most a request for `images` images of `prompt` (an edit when `edit`) with
        generation `kwargs` can cost, in US dollars, known before it is sent (`None`: not
        known): `images` times `price_per_image`; backends with price tables add theirs."""
        return None if self.price_per_image is None else self.price_per_image * images

    def use_budget(self, budget: CostBudget | None) -> None:
        """Keeps every request of the model within `budget` from now on (`None`: no
        budget). Raises `ConfigError` when the model cannot bound what a request with its
        generation kwargs costs, or serves another budget already."""
        if budget is not None:
            if self._most_cost("", 1, self.get_generation_kwargs(), False) is None:
                raise ConfigError(
                    f"max_cost: {type(self).__name__} ({self.model_name}) has no price to "
                    "bound its requests' cost with: set price_per_image (--price-per-image)"
                )
            if self._budget is not None:
                raise ConfigError(
                    f"max_cost: {type(self).__name__} ({self.model_name}) is within the "
                    "budget of another run: give each run its own model"
                )
        self._budget = budget

    def _request_cost(
        self, prompt: str, images: int, kwargs: dict[str, Any], edit: bool = False
    ) -> RequestCost[Any]:
        """The cost of a request priced per image (see `_most_cost`): known before it is
        sent."""
        most = self._most_cost(prompt, images, kwargs, edit)
        return RequestCost(most, lambda _: most)

    async def _reserve(
        self, budget: CostBudget | None, cost: RequestCost[Any] | None
    ) -> float | None:
        """Reserves in `budget` the most a request can cost, waiting while the requests
        under way may leave room for it; returns the amount reserved (`None`: no
        budget). Raises `BudgetReached` when there is no room for it, or
        `RequestRefused` when it cannot be bounded."""
        if budget is None:
            return None
        most = None if cost is None else cost.most
        if most is None:
            raise RequestRefused(
                f"max_cost: the cost of this request to {self.model_name} cannot be known "
                "before its answer: set price_per_image (--price-per-image)"
            )
        while True:
            verdict = budget.reserve(most)
            if verdict == "reserved":
                return most
            if verdict == "refused":
                raise BudgetReached(
                    f"the next request (at most ${most:,.4f}) would take the estimated cost "
                    f"past max_cost ${budget.limit:,.4f} (${budget.spent:,.4f} spent)"
                )
            await asyncio.sleep(_BUDGET_POLL_SECONDS)

    def _transient(self, exc: BaseException) -> bool:
        """Whether a failed attempt is worth repeating; backends add their client's errors."""
        return transient(exc)

    def _refused(self, exc: BaseException) -> bool:
        """Whether a failed attempt is a refusal no retry changes (credentials, an
        unknown model): it is raised as `RequestRefused`, so that a run stops."""
        return refused(exc, self.model_name)

    def _on_loop(self, key: str, factory: Callable[[], T]) -> T:
        """An object made once per event loop (clients are bound to the loop they run on)."""
        loop = asyncio.get_running_loop()
        made = self._per_loop.setdefault(loop, {})
        if key not in made:
            made[key] = factory()
        value: T = made[key]
        return value

    async def _call(
        self,
        request: Callable[[], Awaitable[T]],
        images: int = 1,
        cost: RequestCost[T] | None = None,
    ) -> T:
        """Runs one request for `images` images under the concurrency cap, the rate
        limits and the budget (`cost`: what it costs), with its timeout and retries."""
        return await self._retrying(request, timeout=self.timeout, images=images, cost=cost)

    def _rate_limits(self) -> RateLimits:
        """The rate limits of the current `requests_per_minute` and `images_per_minute`."""
        limits = self._limits
        if not limits.same(self.requests_per_minute, self.images_per_minute):
            limits = self._limits = RateLimits(self.requests_per_minute, self.images_per_minute)
        return limits

    async def _retrying(
        self,
        request: Callable[[], Awaitable[T]],
        *,
        timeout: float | None,
        patient: bool = False,
        longest_wait: float | None = None,
        on_retry: Callable[[RequestError, int], None] | None = None,
        images: int | None = None,
        cost: RequestCost[T] | None = None,
    ) -> T:
        """`_call` with its knobs: `timeout` per attempt (`None`: none), transient faults
        retried `max_retries` times or, when `patient`, without end, waits capped at
        `longest_wait`, `on_retry` told of each failed attempt that is retried, `images`
        the images each attempt asks for (`None`: not a generation request, which the
        rate limits do not count) and `cost` what each attempt costs (reserved in the
        model's budget before it is sent: `None` for a request that is not a generation).
        An attempt the server answered with an error costs nothing; one whose outcome is
        not known (a timeout, a lost connection) or whose answer has no cost counts the
        most it could cost."""
        limits = self._rate_limits()
        slots = self._on_loop(
            f"slots-{self.max_concurrency}", lambda: asyncio.Semaphore(self.max_concurrency)
        )
        attempt = 0
        unsent = _INPUT_UNSENT.get([])
        while True:
            failure: RequestError | None = None
            retried: RequestError | None = None
            with self._sending.held():
                if unsent:
                    unsent.pop().started()
                async with slots:
                    if self._refusal is not None:
                        # Refused credentials or model, or the budget: no other request
                        # is sent to the same end until the model is loaded again.
                        raise type(self._refusal)(*self._refusal.args)
                    budget = self._budget if images is not None else None
                    try:
                        reserved = await self._reserve(budget, cost)
                    except RequestRefused as refusal:
                        self._refusal = refusal
                        raise
                    spent = reserved
                    try:
                        if images is not None:
                            wait = limits.reserve(images)
                            while wait > 0:
                                await asyncio.sleep(wait)
                                wait = limits.paused_for()
                        if timeout is None:
                            result = await request()
                        else:
                            result = await asyncio.wait_for(request(), timeout)
                        if cost is not None and reserved is not None:
                            spent = cost.actual(result)
                        return result
                    except _Stopped:
                        raise
                    except Exception as exc:
                        if status_code(exc) is not None:
                            spent = 0.0
                        error = self._final_error(exc, attempt + 1)
                        retry = patient or attempt < self.max_retries
                        if not isinstance(error, RequestRefused) and retry and self._transient(exc):
                            retried = error
                            asked = retry_after(exc)
                            if asked is None and status_code(exc) == 429:
                                asked = limit_reset(response_headers(exc))
                            delay = (
                                backoff_delay(self.retry_backoff, attempt)
                                if asked is None
                                else asked
                            )
                            if status_code(exc) == 429:
                                limits.pause(delay)
                        else:
                            failure = error
                        if isinstance(error, RequestRefused):
                            self._refusal = error
                    finally:
                        if images is not None:
                            limits.answered()
                        if budget is not None and reserved is not None:
                            budget.settle(reserved, reserved if spent is None else spent)
            if failure is not None:
                # Raised outside the handler: the original error, which may hold a
                # secret, is not kept as its context.
                raise failure
            if on_retry is not None and retried is not None:
                on_retry(retried, attempt)
            attempt += 1
            await asyncio.sleep(delay if longest_wait is None else min(delay, longest_wait))

    def _note_rate_limits(self, headers: Mapping[str, str] | None) -> None:
        """Follows an answer's rate-limit headers: the requests left in the provider's
        window (`x-ratelimit-remaining-requests`, `-reset-requests`) are sent, the next
        waits for the window's end; a limit of another kind (tokens, images) exhausted
        holds every request until it resets. The requests then wait instead of meeting
        429s."""
        limits = self._rate_limits()
        window = request_window(headers)
        if window is not None:
            limits.observe(window.left, window.reset)
        wait = limit_reset(headers)
        if wait:
            limits.pause(wait)

    def _final_error(self, exc: BaseException, attempts: int) -> RequestError:
        """The error a failed attempt ends with, its secrets masked."""
        what = describe(exc, self.timeout)
        for secret in self._secrets():
            what = what.replace(secret, "**********")
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        error = RequestRefused if self._refused(exc) else RequestError
        return error(f"request failed after {tries}: {what}")

    async def _parts(self, requests: list[tuple[dict[str, Any], Awaitable[Answer]]]) -> Answer:
        """Runs the requests of one input concurrently and joins their answers.

        Each request comes with the part that stands for its images if it fails (`images`
        of `None`, plus keys such as the seed); a failed request's part gets its error, so
        only its images' rows fail. Raises the first error when every request failed, and
        `BudgetReached` when a request met it.
        """
        results = await asyncio.gather(*(job for _, job in requests), return_exceptions=True)
        over = next((result for result in results if isinstance(result, BudgetReached)), None)
        if over is not None:
            raise over  # the run stops before the input, rather than record it failed
        if all(isinstance(result, BaseException) for result in results):
            raise results[0]  # type: ignore[misc]
        answer: Answer = []
        for (missing, _), result in zip(requests, results, strict=True):
            if isinstance(result, BaseException):
                answer.append({**missing, "error": str(result)})
            else:
                answer.extend(result)
        return answer

    def _check_arguments(self, num_generations: Any, kwargs: dict[str, Any]) -> None:
        """Raises `ConfigError` (a `ValueError`) for arguments no request can take, before
        any is sent; backends add checks of their keyword arguments."""
        if isinstance(num_generations, bool) or not isinstance(num_generations, int):
            raise ConfigError(
                f"{type(self).__name__}: num_generations={num_generations!r}: expected an int"
            )
        if num_generations < 1:
            raise ConfigError(
                f"{type(self).__name__}: num_generations={num_generations}: expected >= 1"
            )

    async def agenerate_batch(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        """Answers every input concurrently; a failed request's answer is its exception.

        Raises `ConfigError` for arguments no request can take, before sending any."""
        self._check_arguments(num_generations, kwargs)
        return await self._answer_each(
            [
                functools.partial(
                    self.agenerate, input=prompt, num_generations=num_generations, **kwargs
                )
                for prompt in inputs
            ],
            num_generations,
        )

    async def _answer_each(
        self, answers: list[Callable[[], Awaitable[Answer]]], images: int
    ) -> list[Answer | BaseException]:
        """Runs the coroutine of each input's answer concurrently (each as one request
        for `images` images, unless `_calls_requests`); a failed one's answer is its
        exception."""
        unsent = _BATCH_UNSENT.get(None)

        async def one(answer: Callable[[], Awaitable[Answer]]) -> Answer | BaseException:
            if unsent is not None:
                _INPUT_UNSENT.set([unsent])

            async def request() -> Answer:
                try:
                    return await answer()
                except (KeyboardInterrupt, SystemExit) as exc:
                    raise _Stopped(exc) from None

            try:
                if self._calls_requests:
                    return await request()
                return await self._call(request, images=images)
            except _Stopped as stopped:
                # As the answer, it reaches the caller, who raises it (it fails no row).
                return stopped.interrupt

        return list(await asyncio.gather(*map(one, answers), return_exceptions=True))

    def generate_batch(
        self, inputs: list[str], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        """`agenerate_batch` on the background loop: one answer per input, the exception
        of a failed request as its input's answer (what a task calls, so that only that
        input's rows fail). The inputs use request slots (`idle_slots`) from the call on."""
        return self._run_batch(
            len(inputs), lambda: self.agenerate_batch(inputs, num_generations, **kwargs)
        )

    def _run_batch(
        self, count: int, batch: Callable[[], Awaitable[list[Answer | BaseException]]]
    ) -> list[Answer | BaseException]:
        """Runs the coroutine answering `count` inputs on the background loop, the inputs
        counted in the request slots from now until their first request begins."""
        unsent = _Unsent(self._sending, count)

        async def counted() -> list[Answer | BaseException]:
            _BATCH_UNSENT.set(unsent)
            return await batch()

        try:
            return self._loop.run(counted())
        finally:
            unsent.close()

    def generate(self, inputs: list[str], num_generations: int = 1, **kwargs: Any) -> list[Answer]:
        """Answers every input, or raises the error of the first whose request failed for
        good (a Ctrl-C first), as distilabel's models do."""
        answers = self.generate_batch(inputs, num_generations, **kwargs)
        errors = [answer for answer in answers if isinstance(answer, BaseException)]
        if errors:
            raise next((error for error in errors if not isinstance(error, Exception)), errors[0])
        return [answer for answer in answers if not isinstance(answer, BaseException)]

    async def aclose(self) -> None:
        """Closes the clients made on the running loop (after `await task.agenerate`)."""
        made = self._per_loop.pop(asyncio.get_running_loop(), {})
        for value in made.values():
            close = getattr(value, "aclose", None) or getattr(value, "close", None)
            if callable(close):
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    def load(self) -> None:
        """Counts one more user of the model (a run, a `datasets` map): its requests
        go on until it unloads, whoever else unloads meanwhile. A refusal met before is
        forgotten: the model's fields may have changed since."""
        self._refusal = None
        self._loop.acquire()

    def unload(self) -> None:
        """One user is done. The last one (or a caller that never loaded the model)
        cancels the requests still in flight, closes the clients and stops the background
        loop (the callers of `generate` waiting on it see their requests fail)."""
        self._loop.release(cleanup=self.aclose)


class AsyncImageEditingModel(AsyncImageGenerationModel):
    """An `AsyncImageGenerationModel` that also edits images: `edit` (an
    `ImageEditingModel`) runs `aedit` for each input through the same request machinery
    as generation (concurrency, retries, refusals, rate limits).

    Subclasses implement `aedit` for one input and may extend `_check_edits` with what
    they cannot take (more images, a mask).
    """

    @abstractmethod
    async def aedit(self, input: EditInput, num_generations: int = 1, **kwargs: Any) -> Answer:
        """Makes `num_generations` edited images for one input."""

    def _check_edits(self, inputs: Sequence[EditInput]) -> None:
        """Raises, before any request, `ConfigError` for an input that is not an
        `EditInput`; backends raise `InputRowError` for an input they cannot take."""
        check_edit_inputs(type(self).__name__, inputs)

    def _refuse_input(self, index: int, column: str, why: str) -> InputRowError:
        """The error of an input this backend cannot edit (`column`: `image` or `mask`)."""
        return InputRowError(
            f"row {index} of the batch: {type(self).__name__} {why}", index, column
        )

    async def aedit_batch(
        self, inputs: list[EditInput], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        """Answers every input concurrently; a failed request's answer is its exception.

        Raises `ConfigError` or `InputRowError` for what no request can take, before
        sending any."""
        self._check_arguments(num_generations, kwargs)
        self._check_edits(inputs)
        return await self._answer_each(
            [
                functools.partial(
                    self.aedit, input=input, num_generations=num_generations, **kwargs
                )
                for input in inputs
            ],
            num_generations,
        )

    def edit(
        self, inputs: list[EditInput], num_generations: int = 1, **kwargs: Any
    ) -> list[Answer | BaseException]:
        """`aedit_batch` on the background loop, as `generate_batch` runs generations."""
        return self._run_batch(
            len(inputs), lambda: self.aedit_batch(inputs, num_generations, **kwargs)
        )
