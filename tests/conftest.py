"""Shared fixtures: real peer programs (installed as root when missing, else skipped with a reason), namespaces."""

from __future__ import annotations

import os

import pytest

from wiregate.testing.netns import Lab, can_use_netns
from wiregate.testing.peers import need  # noqa: F401 - tests import it from wiregate.testing.peers


@pytest.fixture
def lab(request):
    """A Lab of network namespaces; everything in it is removed after the test, pass or fail."""
    reason = can_use_netns()
    if reason:
        pytest.skip(reason)
    with Lab(tag=request.node.name[:1]) as lab:
        yield lab


def pytest_addoption(parser):
    parser.addoption("--fuzz-deep", action="store_true",
                     help="run the fuzz tests (tests/fuzz) with 20,000 examples each instead of 40 (minutes)")


def pytest_configure(config):
    if config.getoption("--fuzz-deep"):
        os.environ["WIREGATE_FUZZ_EXAMPLES"] = "20000"  # read by tests/fuzz/common.py when it is imported
