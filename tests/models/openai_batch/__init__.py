"""Tests of `imagetask.models.openai_batch`."""
