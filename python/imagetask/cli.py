"""The `imagetask` command: generate an image dataset from a file of prompts (`generate`),
edit the images of a dataset (`edit`), browse a run (`gallery`), keep the images chosen
(`select`), send a run's dataset to the Hugging Face Hub (`publish`), or measure what
building its rows costs (`bench`)."""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import logging
import math
import os
import re
import shlex
import sys
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from imagetask import _bench as bench
from imagetask.curate import Where, dataset_files, publish, select
from imagetask.errors import ConfigError, ImageTaskError, RunInterrupted, UsageError
from imagetask.gallery._page import build_gallery
from imagetask.io._parquet import SHARD_BYTES
from imagetask.io._readers import FORMATS, Reader
from imagetask.models import (
    ImageGenerationModel,
    InferenceEndpointsImageGeneration,
    OpenAIBatchImageGeneration,
    OpenAIImageGeneration,
    PlaceholderImageGeneration,
)
from imagetask.models._placeholder import parse_size
from imagetask.run._runner import run
from imagetask.task._editing import ImageEditing
from imagetask.task._generation import ImageGeneration
from imagetask.task._task import ImageTask
from imagetask.task._template import TemplateGeneration, template_fields

__all__ = ["main", "run_main"]

_BATCH_API_ROWS = 500
_BATCH_API_JOBS = 4
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAPTIONS = ("captions.jsonl", "captions.csv")
"""The captions file an input folder of images holds (one row per image)."""

_EPILOG = """\
model specs:
  placeholder        built-in placeholder pictures (no network, no GPU); the default
  openai:<model>     OpenAI Images API (gpt-image-1, dall-e-3, ...); key from
                     OPENAI_API_KEY (or --api-key-env NAME); --base-url for an
                     OpenAI-compatible server
  openai-batch:<model>
                     the same through OpenAI's Batch API: half the price, answers
                     within 24 h; each batch of rows is one job, recorded in
                     OUTDIR/batch-jobs/ so that --resume re-attaches to it
  hf:<model id>      Hugging Face text-to-image inference; token from HF_TOKEN (or
                     --api-key-env NAME)
  hf:<https://url>   a dedicated Inference Endpoint at that URL

output (in OUTDIR):
  data.jsonl                  one row per generated image (see the README)
  data/train-*.parquet        the same with --format parquet, as a Hugging Face
  README.md                   dataset: load_dataset(OUTDIR, split="train")
  artifacts/<task>/images/    the images, named by their sha256 (--save-artifacts)
  checkpoint.json             progress, for --resume after a crash or Ctrl-C
  run.json                    the task, row counts and timings of a finished run

exit status:
  0 every generation made its image; 3 some failed (--resume --retry-failed makes
  them again); 1 no image made, the run stopped early, or an error; 130 Ctrl-C

examples:
  imagetask generate examples/prompts.txt -o out
  imagetask generate prompts.csv -o out --column prompt=caption --num-generations 4
  imagetask generate prompts.jsonl -o out --model openai:gpt-image-1 --size 1024x1024
  imagetask generate prompts.jsonl -o out --model openai:gpt-image-1 --param quality=high
  imagetask generate prompts.jsonl -o out --template "a photo of {subject} in {style}"
  imagetask generate prompts.jsonl -o out --model openai-batch:gpt-image-1
"""

_EDIT_EPILOG = """\
model specs: placeholder (the default: edits offline, its pictures derive from the
  source images and the prompt), openai:<model> (/v1/images/edits: several images,
  a mask), hf:<model id or URL> (image-to-image: one image, no mask)

examples:
  imagetask edit examples/edit -o out
  imagetask edit photos.jsonl -o out --image-column photo --column prompt=instruction
  imagetask edit photos.parquet -o out --model openai:gpt-image-1 --mask-column mask
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagetask",
        description="Turn rows of data into image datasets.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"imagetask {importlib.metadata.version('imagetask')}",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    generate = commands.add_parser(
        "generate",
        help="generate images for every row of an input file",
        description=(
            "Read INPUT (JSONL, CSV, Parquet, or text with one prompt per line), generate\n"
            "images for each row and write the dataset to OUTDIR. A run can be stopped\n"
            "(Ctrl-C, or killed) and continued with --resume."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(generate, input_help=f"the input file ({', '.join(sorted(FORMATS))})")
    generate.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="prompt=COL",
        help="read the prompt from column COL of the input (with --task: INPUT=COL, any input)",
    )
    generate.add_argument(
        "--task",
        metavar="MODULE:CLASS",
        help="your own task: an ImageTask subclass imported from MODULE (found from the "
        "current folder too); it gets the model and the options below as fields",
    )
    generate.add_argument(
        "--template",
        metavar="TEXT",
        help='build each prompt from several columns: "a photo of {subject} in {style}" '
        "fills {subject} and {style} from the columns of those names",
    )
    edit = commands.add_parser(
        "edit",
        help="edit the images of every row of an input file as its prompt says",
        description=(
            "Read INPUT (JSONL or CSV whose image column holds paths, relative to INPUT's\n"
            "folder; Parquet whose image column holds Hugging Face Image structs; or a\n"
            "folder of images with a captions.jsonl or captions.csv naming them), edit each\n"
            "row's image as its prompt says and write the dataset to OUTDIR, as generate\n"
            "does (resume, Parquet output and artifacts alike). The edited images are in\n"
            "the column edited_image; with --num-generations, --group-generations keeps\n"
            "one row per source image."
        ),
        epilog=_EDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(edit, input_help="the input file, or a folder with a captions file")
    edit.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="prompt=COL",
        help="read the prompt (the instruction) from column COL of the input",
    )
    edit.add_argument(
        "--image-column",
        default="image",
        metavar="COL",
        help="the column of the source image, or of a list of them (default: image)",
    )
    edit.add_argument(
        "--mask-column",
        metavar="COL",
        help="the column of a mask (an image the size of the first source image)",
    )
    edit.add_argument(
        "--group-generations",
        action="store_true",
        help="one row per source image, its edits in lists (instead of one row per edit)",
    )
    edit.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read image paths that lead outside INPUT's folder",
    )
    gallery = commands.add_parser(
        "gallery",
        help="write a page to browse a run, or to compare two",
        description=(
            "Write OUT/gallery/index.html, a static page (no network needed) showing each\n"
            "prompt of the run OUT with its images and failures, and print its path. With\n"
            "OUT_B, write OUT/gallery/compare.html instead: the same prompts of both runs\n"
            "side by side."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gallery.add_argument("run", metavar="OUT", help="the folder of a run")
    gallery.add_argument("compare", metavar="OUT_B", nargs="?", help="a run to compare with")
    gallery.add_argument("--open", action="store_true", help="open the page in a web browser")
    select = commands.add_parser(
        "select",
        help="write a new dataset of the images of a run that are kept",
        description=(
            "Write OUT2, a new dataset in RUN's format (its card and images included) with\n"
            "the images of RUN that are kept, in RUN's order; no model is called. An image\n"
            "marked `reject` in MARKS (the file the gallery page exports) leaves, an image\n"
            "without a mark stays. With group_generations, a rejected image leaves its row's\n"
            "lists, and a row left with none leaves the dataset."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    select.add_argument("run", metavar="RUN", help="the folder of a run")
    select.add_argument(
        "-o", "--output", metavar="OUT2", required=True, help="the new dataset's folder"
    )
    select.add_argument(
        "--marks", metavar="MARKS", help="the marks file (imagetask-marks, version 1)"
    )
    select.add_argument(
        "--reject-failed", action="store_true", help="leave out the failed generations"
    )
    select.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep only the rows whose COLUMN equals VALUE (COLUMN!=VALUE: does not); "
        "VALUE is read as JSON where it parses, else as text; repeatable, all must hold",
    )
    publish = commands.add_parser(
        "publish",
        help="send a finished run's dataset to the Hugging Face Hub",
        description=(
            "Create the dataset repository REPO on the Hugging Face Hub (if it does not\n"
            "exist) and send it RUN's dataset in one commit: its data files, a card\n"
            "(README.md) written from run.json, and the images its rows reference; none\n"
            "of the run's bookkeeping (checkpoint, run.json, gallery, ...). The token is\n"
            "HF_TOKEN or the one `hf auth login` saved. Needs the hf extra."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("run", metavar="RUN", help="the folder of a finished run")
    publish.add_argument(
        "--repo", required=True, metavar="USER/NAME", help="the dataset repository"
    )
    publish.add_argument("--private", action="store_true", help="create the repository private")
    publish.add_argument(
        "--license",
        metavar="ID",
        help="the dataset's license as the Hub names it (cc-by-4.0, mit, ...); default: none set",
    )
    publish.add_argument(
        "--pretty-name", metavar="TEXT", help="the dataset's name on the Hub (default: RUN's name)"
    )
    publish.add_argument(
        "--dry-run",
        action="store_true",
        help="list the files that would be sent (size in bytes, then path) and send nothing",
    )
    bench.add_command(commands)
    return parser


def _add_run_options(command: argparse.ArgumentParser, input_help: str) -> None:
    """The arguments `generate` and `edit` share: the input, the output, the model and
    the run's options."""
    command.add_argument("input", metavar="INPUT", help=input_help)
    command.add_argument(
        "-o", "--output", metavar="OUTDIR", required=True, help="the output folder"
    )
    command.add_argument(
        "--model",
        default="placeholder",
        metavar="SPEC",
        help="placeholder | openai:<model> | openai-batch:<model> | hf:<model id or URL> "
        "(default: placeholder)",
    )
    command.add_argument(
        "--num-generations", type=int, default=1, metavar="N", help="images per row (default: 1)"
    )
    command.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help=f"rows per batch (default: 50; openai-batch: {_BATCH_API_ROWS}, one job each)",
    )
    command.add_argument(
        "--save-artifacts",
        action="store_true",
        help="write each image to OUTDIR/artifacts/ and record its path in image_path",
    )
    command.add_argument(
        "--no-inline-images",
        dest="inline_images",
        action="store_false",
        help="with --save-artifacts and JSONL: leave out the base64 image column, keeping "
        "image_path only (each image stored once)",
    )
    command.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default="jsonl",
        help="output format (default: jsonl; parquet needs the parquet extra)",
    )
    command.add_argument(
        "--shard-mb",
        type=float,
        default=SHARD_BYTES / 1e6,
        metavar="MB",
        help="parquet: start a new shard of OUTDIR/data/ after this many MB of rows "
        f"(default: {SHARD_BYTES / 1e6:g})",
    )
    command.add_argument(
        "--resume", action="store_true", help="continue the run recorded in OUTDIR"
    )
    command.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: first make the failed generations of the rows done again, "
        "each in its place",
    )
    command.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run OUTDIR holds (its output, artifacts, checkpoint) and start afresh",
    )
    command.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=50,
        metavar="N",
        help="stop the run once N generations in a row failed (default: 50; 0: never)",
    )
    command.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="stop after N input rows in all (resumes included); --resume goes further",
    )
    command.add_argument(
        "--size",
        metavar="WxH",
        help="image size (placeholder default: 256x256; sent as `size` to OpenAI, "
        "as width/height to Hugging Face)",
    )
    command.add_argument(
        "--seed",
        type=int,
        help="placeholder: the seed its pictures derive from (default 0); hf: the seed of "
        "each prompt's first image, k added for image k (default: random)",
    )
    command.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generation kwarg sent to the model (repeatable): quality=high, "
        "num_inference_steps=30, ...; VALUE is read as JSON where it parses, else as text",
    )
    command.add_argument("--base-url", metavar="URL", help="the server of openai:<model>")
    command.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="read the API key of an HTTP model from the environment variable NAME "
        "(default: OPENAI_API_KEY for openai, HF_TOKEN for hf)",
    )
    command.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="HTTP models: the longest wait for one request (default: 120)",
    )
    command.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="HTTP models: times a failed request is sent again (default: 4)",
    )
    command.add_argument(
        "--images-per-request",
        type=int,
        metavar="N",
        help="openai: the most images asked in one request (default: 1 for dall-e-3, else 10)",
    )
    command.add_argument(
        "--max-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="requests in flight at once for HTTP models (default: 16)",
    )
    command.add_argument(
        "--rpm",
        type=float,
        metavar="N",
        help="HTTP models: the most requests sent per minute, spaced evenly (default: no "
        "limit; a 429 holds every request for as long as the server asks)",
    )
    command.add_argument(
        "--ipm",
        type=float,
        metavar="N",
        help="HTTP models: the most images asked for per minute, spaced evenly (default: no limit)",
    )
    command.add_argument(
        "--price-per-image",
        type=float,
        metavar="USD",
        help="HTTP models: what each image costs, in US dollars, for the run's estimated "
        "cost (default: OpenAI's price table for its image models; none for the others)",
    )
    command.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="stop the run before a request could take its estimated cost (resumes "
        "included) past USD; --resume with a larger one goes on",
    )
    command.add_argument(
        "--checkpoint-every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="sync the output and write the checkpoint at most this often; a crash repeats "
        "at most this much work (default: 1; 0: after every batch)",
    )
    command.add_argument(
        "--quiet", action="store_true", help="no progress, only errors and the final line"
    )
    batch_api = command.add_argument_group("openai-batch:<model> options")
    batch_api.add_argument(
        "--jobs-in-flight",
        type=int,
        metavar="N",
        help=f"batch jobs running at once (default: {_BATCH_API_JOBS}); the images of the "
        "jobs not yet written are held in memory",
    )
    batch_api.add_argument(
        "--poll-every",
        type=float,
        metavar="SECONDS",
        help="the longest wait between two polls of a job (default: 300; the first is 5 s "
        "or less, then the wait doubles)",
    )
    batch_api.add_argument(
        "--resubmit-expired",
        type=int,
        metavar="N",
        help="submit again, up to N times, the requests that an expired or cancelled job "
        "did not run (default: 0, they become failed rows)",
    )


def _params(pairs: Sequence[str]) -> dict[str, Any]:
    """The `--param KEY=VALUE` pairs as generation kwargs, each VALUE read as JSON where it
    parses (`30`, `true`, `[1, 2]`) and as text otherwise."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected KEY=VALUE, got {pair!r}")
        if key in params:
            raise UsageError(f"--param: {key!r} is given twice")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params


def _generation_kwargs(sized: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The kwargs `--size` sets (`sized`) and the `--param`s, which may not set them again."""
    for key in params:
        if key in sized:
            raise UsageError(f"--param {key}: --size sets it already; give one of them")
    return {**sized, **params}


def _http_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields every HTTP model takes from the command line."""
    fields: dict[str, Any] = {"max_concurrency": args.max_concurrency}
    if args.timeout is not None:
        if not math.isfinite(args.timeout) or args.timeout <= 0:
            raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
        fields["timeout"] = args.timeout
    for flag, field in (("--rpm", "requests_per_minute"), ("--ipm", "images_per_minute")):
        value = getattr(args, flag[2:])
        if value is not None:
            if not math.isfinite(value) or value <= 0:
                raise UsageError(f"{flag} must be a positive number per minute, got {value}")
            fields[field] = value
    if args.price_per_image is not None:
        price = args.price_per_image
        if not math.isfinite(price) or price < 0:
            raise UsageError(f"--price-per-image must be a number of US dollars >= 0, got {price}")
        fields["price_per_image"] = price
    if args.max_retries is not None:
        if args.max_retries < 0:
            raise UsageError(f"--max-retries must be at least 0, got {args.max_retries}")
        fields["max_retries"] = args.max_retries
    if args.api_key_env is not None:
        name = args.api_key_env
        if not _ENV_NAME.fullmatch(name):
            # Not echoed: it may be the key itself given by mistake.
            raise UsageError("--api-key-env: expected the name of an environment variable")
        key = os.environ.get(name)
        if not key:
            raise UsageError(f"--api-key-env: the environment variable {name} is not set")
        fields["api_key"] = key
    return fields


def _openai_fields(args: argparse.Namespace, name: str, sized: dict[str, Any]) -> dict[str, Any]:
    """The fields of `OpenAIImageGeneration` (and of its Batch API subclass)."""
    if args.seed is not None:
        raise UsageError("--seed: the OpenAI Images API takes no seed")
    fields = _http_fields(args)
    if args.images_per_request is not None:
        if args.images_per_request < 1:
            raise UsageError(
                f"--images-per-request must be at least 1, got {args.images_per_request}"
            )
        fields["images_per_request"] = args.images_per_request
    kwargs = _generation_kwargs(sized, _params(args.param))
    return {**fields, "model": name, "base_url": args.base_url, "generation_kwargs": kwargs}


def _batch_api_model(args: argparse.Namespace, fields: dict[str, Any]) -> ImageGenerationModel:
    if not args.quiet:
        logging.getLogger(OpenAIBatchImageGeneration.__module__).setLevel(logging.INFO)
    poll = 300.0 if args.poll_every is None else args.poll_every
    if poll <= 0:
        raise UsageError(f"--poll-every must be more than 0, got {poll:g}")
    resubmit = args.resubmit_expired or 0
    if resubmit < 0:
        raise UsageError(f"--resubmit-expired must be at least 0, got {resubmit}")
    return OpenAIBatchImageGeneration(
        **fields,
        output_dir=str(Path(args.output).resolve()),
        poll_interval=min(5.0, poll),
        max_poll_interval=poll,
        resubmit_expired=resubmit,
    )


def _placeholder_model(args: argparse.Namespace) -> ImageGenerationModel:
    if args.base_url is not None:
        raise UsageError("--base-url is for openai:<model>")
    for flag in (
        "timeout",
        "max_retries",
        "api_key_env",
        "images_per_request",
        "rpm",
        "ipm",
        "price_per_image",
    ):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag.replace('_', '-')}: the placeholder model sends no requests")
    if args.param:
        raise UsageError(
            f"--param {args.param[0].partition('=')[0]}: the placeholder model takes no "
            "generation kwargs (its size and seed are --size and --seed)"
        )
    fields: dict[str, Any] = {"size": args.size or "256x256"}
    if args.seed is not None:
        fields["seed"] = args.seed
    return PlaceholderImageGeneration(**fields)


def _model(args: argparse.Namespace) -> ImageGenerationModel:
    kind, _, name = args.model.partition(":")
    for flag in ("jobs_in_flight", "poll_every", "resubmit_expired"):
        if kind != "openai-batch" and getattr(args, flag) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} is for openai-batch:<model>")
    size = args.size
    width = height = 0
    if size is not None:
        try:
            width, height = parse_size(size)
        except ValueError as exc:
            raise UsageError(f"--size: {exc}") from None
    if kind == "placeholder" and not name:
        return _placeholder_model(args)
    if kind in ("openai", "openai-batch") and name:
        fields = _openai_fields(args, name, {"size": size} if size else {})
        if kind == "openai-batch":
            return _batch_api_model(args, fields)
        return OpenAIImageGeneration(**fields)
    if kind == "hf" and name:
        if args.base_url is not None:
            raise UsageError("--base-url is for openai:<model>; give hf:<endpoint URL> instead")
        if args.images_per_request is not None:
            raise UsageError("--images-per-request is for openai:<model>")
        url = name.startswith(("http://", "https://"))
        sized = {"width": width, "height": height} if size else {}
        return InferenceEndpointsImageGeneration(
            **_http_fields(args),
            model_id=None if url else name,
            base_url=name if url else None,
            seed=args.seed,
            generation_kwargs=_generation_kwargs(sized, _params(args.param)),
        )
    raise UsageError(
        f"--model: unknown model spec {args.model!r} (expected placeholder, openai:<model>, "
        "openai-batch:<model> or hf:<model id or URL>)"
    )


def _mappings(columns: Sequence[str], any_input: bool = False) -> dict[str, str]:
    """The `--column INPUT=COL` pairs: `prompt=COL`, or any input of a `--task`."""
    mappings = {}
    for column in columns:
        name, sep, source = column.partition("=")
        if not sep or not source or not name or (name != "prompt" and not any_input):
            expected = "<input>" if any_input else "prompt"
            raise UsageError(f"--column: expected {expected}=<column>, got {column!r}")
        mappings[name] = source
    return mappings


def _task_class(spec: str) -> type[ImageTask]:
    """The class `--task MODULE:CLASS` names, imported with the current folder on the path."""
    module_name, sep, name = spec.partition(":")
    if not (sep and module_name and name):
        raise UsageError(f"--task: expected MODULE:CLASS, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and f"{module_name}.".startswith(f"{missing}."):
            raise UsageError(f"--task: no module named {missing!r}") from None
        raise UsageError(f"--task: cannot import {module_name}: {exc}") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ImageTask)):
        raise UsageError(f"--task: {spec} is not an ImageTask subclass")
    return cls


def _task(args: argparse.Namespace, **fields: Any) -> ImageTask:
    """The task of `generate`: `ImageGeneration`, `TemplateGeneration` with `--template`,
    or the user's class with `--task`."""
    if args.task is not None:
        if args.template is not None:
            raise UsageError("--task and --template: choose one")
        cls = _task_class(args.task)
        if "save_artifacts" not in cls.__fields__ and fields.pop("save_artifacts"):
            raise UsageError(f"--save-artifacts: {args.task} has no `save_artifacts` field")
        if "inline_images" not in cls.__fields__ and fields.pop("inline_images") is False:
            raise UsageError(f"--no-inline-images: {args.task} has no `inline_images` field")
        return cls(**fields, input_mappings=_mappings(args.column, any_input=True))
    if args.template is None:
        return ImageGeneration(**fields, input_mappings=_mappings(args.column))
    if args.column:
        raise UsageError("--column and --template: the template names its columns itself")
    try:
        template_fields(args.template)
    except ValueError as exc:
        raise UsageError(f"--template: {exc}") from None
    return TemplateGeneration(**fields, template=args.template)


def _generate(args: argparse.Namespace) -> int:
    return _run(args, args.input, lambda fields: _task(args, **fields))


def _captions(folder: Path) -> Path:
    """The captions file of an input folder of images."""
    found = [folder / name for name in _CAPTIONS if (folder / name).is_file()]
    if len(found) != 1:
        names = " or ".join(_CAPTIONS)
        why = "holds both" if found else "has no"
        raise UsageError(f"INPUT: the folder {str(folder)!r} {why} {names}")
    return found[0]


def _edit(args: argparse.Namespace) -> int:
    """`imagetask edit`: an `ImageEditing` run over the rows of INPUT."""
    input_file = Path(args.input)
    if input_file.is_dir():
        input_file = _captions(input_file)
    mappings = _mappings(args.column)
    mappings["image"] = args.image_column
    if args.mask_column is not None:
        mappings["mask"] = args.mask_column
    if args.model.startswith("openai-batch:"):
        raise UsageError(
            "--model openai-batch: the Batch API does not edit images (its jobs hold JSON "
            "bodies, an edit uploads its images): use openai:<model>"
        )

    def editing(fields: dict[str, Any]) -> ImageTask:
        return ImageEditing(
            **fields,
            input_mappings=mappings,
            use_mask=args.mask_column is not None,
            group_generations=args.group_generations,
            input_folder=str(input_file.resolve().parent),
            allow_outside_paths=args.allow_outside_paths,
        )

    return _run(args, str(input_file), editing)


def _run(
    args: argparse.Namespace, input_file: str, make_task: Callable[[dict[str, Any]], ImageTask]
) -> int:
    """Runs the task `make_task` makes of the command's fields over `input_file`, and
    reports the run; returns the exit status."""
    batch_api = args.model.startswith("openai-batch:")
    if args.batch_size is None:
        args.batch_size = _BATCH_API_ROWS if batch_api else 50
    in_flight = args.jobs_in_flight
    if in_flight is None:
        in_flight = _BATCH_API_JOBS if batch_api else 2
    for flag, value in (
        ("--num-generations", args.num_generations),
        ("--batch-size", args.batch_size),
        ("--max-concurrency", args.max_concurrency),
        ("--jobs-in-flight", in_flight),
    ):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if not math.isfinite(args.checkpoint_every) or args.checkpoint_every < 0:
        raise UsageError(
            f"--checkpoint-every must be a finite number of seconds >= 0, got "
            f"{args.checkpoint_every}"
        )
    if not math.isfinite(args.shard_mb) or args.shard_mb * 1e6 < 1:
        raise UsageError(f"--shard-mb must be a positive number of MB, got {args.shard_mb}")
    if not args.output:
        raise UsageError("-o/--output: the output folder is an empty path")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be at least 0, got {args.limit}")
    if args.max_consecutive_failures < 0:
        raise UsageError(
            f"--max-consecutive-failures must be at least 0, got {args.max_consecutive_failures}"
        )
    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed makes a run's failed generations again: add --resume")
    if args.overwrite and args.resume:
        raise UsageError("--overwrite starts afresh, --resume goes on: choose one")
    if args.max_cost is not None and (not math.isfinite(args.max_cost) or args.max_cost < 0):
        raise UsageError(f"--max-cost must be a number of US dollars >= 0, got {args.max_cost}")
    reader = Reader(input_file)
    task = make_task(
        {
            "image_generation_model": _model(args),
            "num_generations": args.num_generations,
            "input_batch_size": args.batch_size,
            "save_artifacts": args.save_artifacts,
            "images_as_bytes": args.format == "parquet",
            "inline_images": args.inline_images,
        }
    )
    # What the process holds so far (its modules, the model's client library) outlives
    # the run: the cyclic collector does not walk it in each full collection meanwhile.
    gc.freeze()
    try:
        summary = run(
            task,
            reader,
            args.output,
            format=args.format,
            resume=args.resume,
            limit=args.limit,
            progress=not args.quiet,
            checkpoint_seconds=args.checkpoint_every,
            batches_in_flight=in_flight,
            shard_bytes=round(args.shard_mb * 1e6),
            max_consecutive_failures=args.max_consecutive_failures,
            retry_failed=args.retry_failed,
            overwrite=args.overwrite,
            max_cost=args.max_cost,
        )
    finally:
        gc.unfreeze()
    print(
        f"imagetask: {summary.rows_in:,} rows in, {summary.rows_out:,} rows out "
        f"({summary.images:,} images, {summary.failed:,} failed, "
        f"estimated cost {summary.cost_text()}) -> {summary.data}"
    )
    print(f"browse: imagetask gallery {shlex.quote(args.output)}")
    if not summary.failed:
        return 0
    schema = task.output_schema
    errors = f"their errors are under {schema.error} in {schema.metadata}"
    again = _command(args.argv, "--resume", "--retry-failed")
    if not summary.images:
        print(
            f"imagetask: error: no image was made: all {summary.failed:,} generations failed "
            f"({errors}); to make them again: {again}",
            file=sys.stderr,
        )
        return 1
    generations = summary.images + summary.failed
    print(
        f"imagetask: {summary.failed:,} of {generations:,} generations failed ({errors}); "
        f"to make them again: {again}",
        file=sys.stderr,
    )
    return 3


_RUN_FLAGS = ("--resume", "--retry-failed", "--overwrite")


def _a_run_flag(arg: str) -> bool:
    return len(arg) > 2 and arg.startswith("--") and any(f.startswith(arg) for f in _RUN_FLAGS)


def _command(argv: Sequence[str], *flags: str) -> str:
    """The command `argv` was, without its run flags (or their abbreviations), with
    `flags` instead."""
    kept = [arg for arg in argv if not _a_run_flag(arg)]
    return shlex.join(["imagetask", *kept, *flags])


def _again(argv: Sequence[str]) -> str:
    """The command that goes on after a Ctrl-C outside a run's batches (while the task
    loads, a resume checks its input, `--overwrite` deletes): the command as it was when
    it had a run flag, else with `--resume` (which also starts a run not begun)."""
    if any(_a_run_flag(arg) for arg in argv):
        return shlex.join(["imagetask", *argv])
    return _command(argv, "--resume")


def _gallery(args: argparse.Namespace) -> int:
    page = build_gallery(args.run, args.compare)
    print(page)
    if args.open and not webbrowser.open(page.resolve().as_uri()):
        print(f"imagetask: could not open a web browser; the page is {page}", file=sys.stderr)
    return 0


def _select(args: argparse.Namespace) -> int:
    try:
        where = [Where.parse(text) for text in args.where]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    chosen = select(
        args.run, args.output, marks=args.marks, reject_failed=args.reject_failed, where=where
    )
    print(
        f"imagetask: {chosen.images:,} images ({chosen.failed:,} failed generations) of "
        f"{chosen.inputs:,} input rows kept in {chosen.rows:,} rows; left out: "
        f"{chosen.rejected:,} rejected, {chosen.dropped_failed:,} failed, "
        f"{chosen.dropped_where:,} not matching -> {chosen.output}"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    if args.dry_run:
        files = dataset_files(args.run, license=args.license, pretty_name=args.pretty_name)
        for file in files:
            print(f"{file.size:>12}  {file.path}")
        total = sum(file.size for file in files)
        print(
            f"imagetask: dry run: {len(files):,} files ({total:,} bytes) would be sent to "
            f"{args.repo}; nothing was sent",
            file=sys.stderr,
        )
        return 0
    done = publish(
        args.run,
        args.repo,
        private=args.private,
        license=args.license,
        pretty_name=args.pretty_name,
    )
    total = sum(file.size for file in done.files)
    print(f"imagetask: {len(done.files):,} files ({total:,} bytes) sent to {done.url}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status: 0 done (`generate`: every generation
    made its image), 1 an error (`generate`: no image made, or the run stopped early),
    3 (`generate`) some generations failed, 130 Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="imagetask: %(levelname)s: %(message)s")
    try:
        if args.command == "bench":
            return bench.main(args)
        if args.command == "select":
            return _select(args)
        if args.command == "publish":
            return _publish(args)
        if args.command == "edit":
            return _edit(args)
        return _gallery(args) if args.command == "gallery" else _generate(args)
    except RunInterrupted as exc:
        print(
            f"imagetask: interrupted after {exc.summary.rows_in:,} input rows; to continue: "
            f"{_command(argv, '--resume')}",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:  # before the run's first batch or after its end
        again = ""
        if args.command in ("generate", "edit"):
            again = f"; to continue: {_again(argv)}"
        print(f"imagetask: interrupted{again}", file=sys.stderr)
        return 130
    except (ImageTaskError, OSError) as exc:
        print(f"imagetask: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1


def _one_line(message: str) -> str:
    """A message on one line (errors of pyarrow and others may span several)."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def run_main() -> None:
    """The console script: `main` with its status as the exit code."""
    sys.exit(main())


if __name__ == "__main__":
    run_main()
