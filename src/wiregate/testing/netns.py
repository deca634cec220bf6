"""Network namespaces and veth links: see wiregate.demo.netns (the demo runs on them too)."""

from wiregate.demo.netns import Lab as Lab
from wiregate.demo.netns import Netns as Netns
from wiregate.demo.netns import can_use_netns as can_use_netns
