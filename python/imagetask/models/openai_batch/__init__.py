"""OpenAI Batch API backend (`imagetask[openai]`): the Images API at half the price, with
submitted jobs kept in a journal so a stopped run re-attaches to them."""

from imagetask.models.openai_batch._backend import (
    JOBS_DIR,
    MAX_INPUT_BYTES,
    MAX_REQUESTS_PER_JOB,
    OpenAIBatchImageGeneration,
)

__all__ = ["JOBS_DIR", "MAX_INPUT_BYTES", "MAX_REQUESTS_PER_JOB", "OpenAIBatchImageGeneration"]
