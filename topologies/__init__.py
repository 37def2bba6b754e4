"""Mininet topologies of the suite (see testbeds.py) and the OVS switch they run on (nodes.py).

From the command line: `mn --custom topologies/testbeds.py --topo lime --switch ovs,datapath=user`,
or with the suite's own switch class via `mn --custom topologies/mn_custom.py --switch sdn ...`.
"""
