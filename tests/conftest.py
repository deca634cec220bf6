"""Shared fixtures: real peer programs (installed as root when missing, else skipped with a reason), namespaces."""

from __future__ import annotations

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
