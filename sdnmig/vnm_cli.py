"""`sdnmig vnm <command>`: whole-network migration (Tunnel ALAP / ASAP) from the command line.

Bad input fails first, with nothing looked up (checked as the VNM app will, ryu_apps.vnm.core);
then the controller instance running the VNM app is chosen (sdnmig.vnm.choose) and, for prepare,
the layout is planned from the wiring of that instance's bridges (sdnmig.lime_topo,
ryu_apps.vnm.plan). `--plan` prints the request and sends nothing; with no instance to choose it
plans from every bridge of this machine.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict, List, Optional

from sdnmig import instances, lime, lime_cli, ops, vnm
from sdnmig.errors import SdnmigError


def _instance(args: argparse.Namespace, switch: Optional[int]) -> Optional[instances.Instance]:
    try:
        return vnm.choose(args.state_dir, args.controller, switch)
    except SdnmigError:
        if args.plan:
            return None
        raise


Chooser = Callable[[Optional[int]], Optional[instances.Instance]]


def _request(args: argparse.Namespace, instance: Chooser) -> Dict[str, Any]:
    """The checked request; prepare's planned from the wiring once its input is checked."""
    if args.command == "prepare":
        prep = vnm.Prepare(args.algorithm,
                           lime.parse_pairs([p for p in args.pairs.split(",") if p.strip()],
                                            "--pairs"),
                           ops.parse_dpid(args.tunnel_switch), vnm.parse_names(args.hosts or []))
        return prep.request(vnm.wiring_of(instance(vnm.switch_of(prep)))())
    body: Dict[str, Any] = {}
    if args.command == "migrate":
        body["host"] = args.host
    if getattr(args, "algorithm", None) is not None:
        body["algorithm"] = args.algorithm
    return vnm.check(args.command, body)


def cmd_vnm(args: argparse.Namespace) -> int:
    timeout = ops._check_timeout(args.timeout)
    chosen: List[Optional[instances.Instance]] = []

    def instance(switch: Optional[int]) -> Optional[instances.Instance]:  # looked up once
        if not chosen:
            chosen.append(_instance(args, switch))
        return chosen[0]
    req = _request(args, instance)
    if args.plan:
        print(json.dumps(req, indent=2))
        return 0
    inst = instance(vnm.switch_of(req))
    assert inst is not None
    answer = vnm.run(lime.shim_client(inst), req, timeout)
    print(json.dumps(answer, indent=2) if args.json else vnm.format_answer(args.command, answer))
    return 0


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`sdnmig vnm <command>`: the VNM app's commands (ryu_apps.vnm.core)."""
    common = lime_cli.common_options(
        "the controller instance whose VNM app to ask (default: the only one running 'vnm'; "
        "with several, prepare asks the first old switch's MASTER on the bus)", "the app's",
        vnm.DEFAULT_TIMEOUT_S)
    v = sub.add_parser("vnm", help="whole-network migration with Tunnel ALAP or ASAP")
    vsub = v.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = vsub.add_parser(name, parents=[common], help=help)
        p.set_defaults(func=cmd_vnm, command=name)
        return p

    p = command("prepare", "clone the old network onto the new one, tunnelled through the "
                           "tunnel switch (planned from the bridges' wiring)")
    p.add_argument("--algorithm", required=True, help="alap or asap")
    p.add_argument("--pairs", required=True, metavar="OLD=NEW,...",
                   help="each old switch and its counterpart, e.g. 0x11=0x21,0x12=0x22")
    p.add_argument("--tunnel-switch", required=True, metavar="DPID",
                   help="the switch joining the two networks, e.g. 0x30")
    p.add_argument("--host", dest="hosts", action="append", metavar="NAME=SWITCH:PORT",
                   help="name the host on an old switch's port, e.g. h1=0x11:4 (repeatable; "
                        "unnamed hosts are called SWITCH:PORT)")
    m = command("migrate", "move one host to the new network (make-before-break)")
    m.add_argument("host", help="the host's name, as prepare listed it")
    m.add_argument("--algorithm", help="refused unless it is the migration's")
    f = command("finalize", "retire the old network and the tunnels, once every host moved")
    f.add_argument("--algorithm", help="refused unless it is the migration's")
    command("status", "the migration's state and where each host is")
