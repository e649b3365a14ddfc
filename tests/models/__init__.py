"""Tests of `imagetask.models`."""
