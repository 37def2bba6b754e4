"""`mn --custom topologies/mn_custom.py --topo lime --switch sdn --host sdn --controller remote,port=6653`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies.nodes import SdnHost, SdnSwitch  # noqa: E402
from topologies.testbeds import topos  # noqa: E402,F401

switches = {"sdn": SdnSwitch}
hosts = {"sdn": SdnHost}
