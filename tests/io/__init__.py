"""Tests of `imagetask.io`."""
