"""Tests of `imagetask.gallery`."""
