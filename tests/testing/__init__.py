"""Tests of `imagetask.testing`."""
