"""`sdnmig lime <op>`: the LIME shim's operations from the command line (see sdnmig.cli).

Bad input fails first, with nothing looked up; then the instance is chosen (sdnmig.lime.choose)
and, for clone, freeze, ensemble and move-host, the request is planned from the wiring of that
instance's bridges (sdnmig.lime_topo, lime_shim.plan), keeping every place the operator gave
(--ports, --tunnels, --neighbours, --onto-port). `--plan` prints the request and sends nothing.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional

from lime_shim import plan as lime_plan
from sdnmig import instances, lime, lime_topo, ops
from sdnmig.errors import SdnmigError


def _json_arg(text: Optional[str], what: str) -> object:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise SdnmigError(f"--{what}: not JSON ({e})") from None


class _LimeContext:
    """What planning needs, looked up only when needed: after the cheap input checks, and not
    at all when every place is given."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._instance: List[Optional[instances.Instance]] = []

    def instance(self) -> Optional[instances.Instance]:
        """The instance to ask; with --plan (nothing sent) none is needed."""
        if not self._instance:
            self._instance.append(_lime_instance(self.args))
        return self._instance[0]

    def spares(self) -> List[int]:  # the instance's lime_spares, and the operator's
        return sorted(set(lime.spares_of(self.instance())) | set(self.args.spares or []))

    def topology(self) -> Dict[int, Dict[int, lime_plan.Peer]]:
        inst = self.instance()
        return lime_topo.topology(inst.target if inst else None)


def _lime_clone_body(args: argparse.Namespace, ctx: _LimeContext) -> Dict[str, Any]:
    """The clone/freeze fields: planned from the wiring, each port the operator placed kept."""
    switch, onto = ops.parse_dpid(args.switch), ops.parse_dpid(args.onto)
    given = {k: _json_arg(getattr(args, k), k) for k in ("ports", "tunnels", "neighbours")}
    checked = lime_plan.check("clone", {"switch": switch, "onto": onto,
                                        **{k: v for k, v in given.items() if v is not None}})
    if all(v is not None for v in given.values()):
        return {k: v for k, v in checked.items() if k != "op"}
    planned = lime_plan.clone_request(ctx.topology(), switch, onto, spares=ctx.spares())
    return lime.with_overrides(planned, checked.get("ports"), checked.get("tunnels"),
                               checked.get("neighbours"))


def _lime_body(args: argparse.Namespace, ctx: _LimeContext) -> Dict[str, Any]:
    """The request's fields; bad input fails before any instance is looked for."""
    op = args.op
    if op in ("clone", "freeze"):
        return _lime_clone_body(args, ctx)
    if op == "move_host":
        switch, onto, port = ops.parse_dpid(args.switch), ops.parse_dpid(args.onto), args.port
        if args.onto_port is not None:
            return {"switch": switch, "port": port, "onto": onto, "onto_port": args.onto_port}
        return lime_plan.move_host_request(ctx.topology(), switch, port, onto)
    if op == "retire":
        return {"switch": ops.parse_dpid(args.switch), "instance": ops.parse_dpid(args.instance)}
    if op == "ensemble":
        if args.steps is not None:
            return {"steps": _json_arg(args.steps, "steps")}
        pairs = lime.parse_pairs(args.pairs, "ensemble")
        return lime_plan.ensemble_request(ctx.topology(), pairs, ctx.spares())
    if op == "retire_ensemble":
        pairs = lime.parse_pairs(args.pairs, "retire-ensemble")
        return {"steps": [{"switch": s, "instance": i} for s, i in sorted(pairs.items())]}
    return {}


def _lime_instance(args: argparse.Namespace) -> Optional[instances.Instance]:
    switch = ops.parse_dpid(args.switch) if getattr(args, "switch", None) is not None else None
    if switch is None and getattr(args, "pairs", None):
        switch = min(lime.parse_pairs(args.pairs, args.op))
    try:
        return lime.choose(args.state_dir, args.controller, switch)
    except SdnmigError:
        if args.plan:
            return None
        raise


def cmd_lime(args: argparse.Namespace) -> int:
    timeout = ops._check_timeout(args.timeout)
    ctx = _LimeContext(args)
    req = lime_plan.check(args.op, _lime_body(args, ctx))
    if args.plan:
        print(json.dumps(req, indent=2))
        return 0
    inst = ctx.instance()
    assert inst is not None
    answer = lime.run(lime.shim_client(inst), req, timeout)
    print(json.dumps(answer, indent=2) if args.json else lime.format_answer(args.op, answer))
    return 0


def _dpid_list(text: str) -> List[int]:
    return [ops.parse_dpid(d) for d in text.split(",") if d.strip()]


def common_options(controller_help: str, whose: str, timeout: float) -> argparse.ArgumentParser:
    """The options every command to an app on a controller instance's Redis takes (`sdnmig
    lime`, `sdnmig vnm`); `whose`: whose answer it is, for the help."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--controller", metavar="ID", help=controller_help)
    common.add_argument("--timeout", type=float, default=timeout,
                        help=f"how long to wait for {whose} answer, seconds")
    common.add_argument("--json", action="store_true", help=f"print {whose} answer as JSON")
    common.add_argument("--plan", action="store_true",
                        help="print the request that would be sent, and send nothing")
    return common


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`sdnmig lime <op>`: the shim's operations (lime_shim.operations), planned here."""
    common = common_options("the controller instance whose shim to ask (default: the only one "
                            "running 'lime', else the switch's MASTER on the bus)", "the shim's",
                            lime.DEFAULT_TIMEOUT_S)
    common.add_argument("--spares", type=_dpid_list, metavar="DPIDS",
                        help="more bridges to leave out of the switch's ports (comma-separated; "
                             "the instance's lime_spares always are)")
    lm = sub.add_parser("lime", help="LIME: clone, move hosts, retire (the shim's operations)")
    lsub = lm.add_subparsers(dest="op", required=True)

    def op(name: str, help: str) -> argparse.ArgumentParser:
        p = lsub.add_parser(name, parents=[common], help=help)
        p.set_defaults(func=cmd_lime, op=name.replace("-", "_"))
        return p

    op("status", "each logical switch's instances, and the links clones rewired")
    for name, what in (("clone", "clone a switch onto a spare (both carry traffic)"),
                       ("freeze", "freeze-and-copy a switch onto a spare (the baseline)")):
        c = op(name, what)
        c.add_argument("switch", help="logical switch, decimal or 0x-hex")
        c.add_argument("--onto", required=True, help="the spare bridge's datapath id")
        c.add_argument("--ports", help='JSON {"lport": onto port}, overrides the plan per port')
        c.add_argument("--tunnels", help='JSON {"lport": [onto port, instance port]}')
        c.add_argument("--neighbours", help="JSON [[dpid, its port to switch, to onto], ...]")
    m = op("move-host", "move a host's port to its link with another instance")
    m.add_argument("switch", help="logical switch, decimal or 0x-hex")
    m.add_argument("port", type=int, help="the host's logical port")
    m.add_argument("--onto", required=True, help="the instance (datapath id) to move it to")
    m.add_argument("--onto-port", type=int, help="that instance's port to the host (default: "
                                                   "the one linked to the same host)")
    r = op("retire", "retire an instance of a logical switch")
    r.add_argument("switch", help="logical switch, decimal or 0x-hex")
    r.add_argument("--instance", required=True, help="the instance's datapath id")
    e = op("ensemble", "clone several switches at once, all or nothing")
    e.add_argument("pairs", nargs="*", metavar="SWITCH=ONTO")
    e.add_argument("--steps", help="JSON list of clone requests instead of planning them")
    re_ = op("retire-ensemble", "retire an instance of each of several switches")
    re_.add_argument("pairs", nargs="+", metavar="SWITCH=INSTANCE")
