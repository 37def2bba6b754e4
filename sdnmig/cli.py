"""`sdnmig`: the toolkit's command-line client.

    sdnmig controllers start --count 2 --apps learning [--of-port 6653] [--master first]
    sdnmig controllers list | stop [ID ...]
    sdnmig status            instances, and who is master of which switch (as OVS reports it)

Errors are one line on stderr with exit status 2; later issues add their commands here.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from sdnmig import instances, ovs
from sdnmig.errors import SdnmigError

DEFAULT_STATE_DIR = Path(os.environ.get("SDNMIG_STATE_DIR", f"/tmp/sdnmig-{os.getuid()}"))


def _table(rows: List[List[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_start(args: argparse.Namespace) -> int:
    reg = instances.Registry(args.state_dir)
    known = reg.load()
    taken = [p for i in known.values() for p in (i.of_port, i.redis_port)]
    if args.of_port_strict and not instances.port_free(args.of_port):
        raise SdnmigError(f"OpenFlow port {args.of_port} is in use: choose another with --of-port")
    insts = instances.plan(args.count, args.apps.split(","), args.state_dir, of_port=args.of_port,
                           redis_port=args.redis_port, master=args.master,
                           platform=args.platform, ids=args.ids.split(",") if args.ids else None,
                           taken=taken)
    if args.of_port_strict and insts[0].of_port != args.of_port:
        raise SdnmigError(f"OpenFlow port {args.of_port} is in use: choose another with --of-port")
    instances.start_all(insts, reg)
    print(_table([["instance", "openflow", "redis", "master of", "platform"]] +
                 [[i.id, i.target, f"{i.host}:{i.redis_port}", i.master_of or "-", i.platform]
                  for i in insts]))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    stopped = instances.stop_all(instances.Registry(args.state_dir), args.ids)
    print("stopped: " + (", ".join(stopped) or "nothing"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    known = instances.Registry(args.state_dir).load()
    if not known:
        print(f"no controller instances in {args.state_dir}")
        return 0
    print(_table([["instance", "state", "openflow", "redis", "master of", "pid", "log"]] +
                 [[i.id, instances.instance_state(i), i.target, f"{i.host}:{i.redis_port}",
                   i.master_of or "-", str(i.controller_pid), str(i.controller_log)]
                  for i in known.values()]))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    known = instances.Registry(args.state_dir).load()
    cmd_list(args)
    by_target = {i.target: i.id for i in known.values()}
    links = ovs.controller_links()
    dpids = ovs.bridge_dpids()
    rows = [["switch", "dpid", "master", "others"]]
    for br in sorted(links):
        ours = [l for l in links[br] if l.target in by_target]
        if not ours and not args.all:
            continue
        name = lambda l: by_target.get(l.target, l.target)  # noqa: E731
        masters = [name(l) for l in links[br] if l.role == "master" and l.connected]
        others = [f"{name(l)}:{'equal' if l.role == 'other' else l.role or 'down'}"
                  for l in links[br] if not (l.role == "master" and l.connected)]
        rows.append([br, f"{dpids.get(br, 0):#x}", ",".join(masters) or "NONE",
                     " ".join(others) or "-"])
    print()
    print(_table(rows) if len(rows) > 1 else "no switch is connected to these instances")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdnmig", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help=f"where instances are recorded (default {DEFAULT_STATE_DIR})")
    sub = p.add_subparsers(dest="cmd", required=True)
    ctl = sub.add_parser("controllers", help="start, list and stop controller instances")
    csub = ctl.add_subparsers(dest="action", required=True)
    st = csub.add_parser("start", help="start N instances, each with its own Redis")
    st.add_argument("--count", type=int, default=1)
    st.add_argument("--apps", default="learning", help="comma-separated app names or modules")
    st.add_argument("--of-port", type=int, default=6653, help="first OpenFlow port to try")
    st.add_argument("--of-port-strict", action="store_true",
                    help="fail instead of moving on when --of-port is taken")
    st.add_argument("--redis-port", type=int, default=16379, help="first Redis port to try")
    st.add_argument("--master", default="first",
                    help="'first' (first instance masters every switch), 'none', "
                         "or 'c1=1,2;c2=3' (switch dpids per instance)")
    st.add_argument("--platform", default="os_ken", choices=instances.PLATFORMS)
    st.add_argument("--ids", help="comma-separated instance ids (default c1..cN)")
    st.set_defaults(func=cmd_start)
    sp = csub.add_parser("stop", help="stop instances (all by default)")
    sp.add_argument("ids", nargs="*")
    sp.set_defaults(func=cmd_stop)
    csub.add_parser("list", help="list instances").set_defaults(func=cmd_list)
    s = sub.add_parser("status", help="instances, and each switch's master as OVS reports it")
    s.add_argument("--all", action="store_true", help="also bridges not connected to these instances")
    s.set_defaults(func=cmd_status)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SdnmigError as e:
        print(f"sdnmig: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdnmig: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
