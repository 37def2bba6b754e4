"""`sdnmig`: the toolkit's command-line client.

    sdnmig controllers start --count 2 --apps learning [--of-port 6653] [--master first]
    sdnmig controllers list | stop [ID ...]
    sdnmig status            instances, and who is master of which switch (as OVS reports it,
                             and, when the bus runs, as the controllers record it)
    sdnmig migrate --switch DPID (--to c2,c3 | --fixed c2 | --auto K) [--commit phase1|phase2]
                   [--transfer copy|shared] [--timeout S] [--json]
    sdnmig cancel --switch DPID      sdnmig history [--limit N] [--json]
    sdnmig api [--port P] [--host H] [--token-file F]   the same operations over HTTP
    sdnmig lime status | clone S --onto D | freeze S --onto D | move-host S PORT --onto D
                | retire S --instance D | ensemble S=D ... | retire-ensemble S=D ...
                [--controller ID] [--timeout S] [--json] [--plan]
                         LIME operations on the shim of a controller instance; clone, freeze,
                         ensemble and move-host are planned from the bridges' wiring
                         (sdnmig.lime_topo) unless --ports/--tunnels/--neighbours/--onto-port say
    sdnmig vnm prepare --algorithm alap|asap --pairs 0x11=0x21,... --tunnel-switch 0x30
                       [--host h1=0x11:4 ...] | migrate HOST | finalize | status
                [--algorithm A] [--controller ID] [--timeout S] [--json] [--plan]
                         whole-network migration (Tunnel ALAP/ASAP) by the VNM app of a
                         controller instance; prepare's layout is planned from the wiring

Errors are one line on stderr with exit status 2 (`migrate` exits 1 when the migration ran but did
not commit); later issues add their commands here.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

from ryu_apps.erc import wire
from sdnmig import api, instances, lime, lime_cli, ops, ovs, vnm, vnm_cli
from sdnmig.errors import SdnmigError
from sdnmig.ops import table as _table

if TYPE_CHECKING:
    import redis

DEFAULT_STATE_DIR = Path(os.environ.get("SDNMIG_STATE_DIR", f"/tmp/sdnmig-{os.getuid()}"))


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
    bus = instances.ensure_bus(args.state_dir,
                               taken=[p for i in insts for p in (i.of_port, i.redis_port)])
    instances.start_all(insts, reg, bus)
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
    _print_bus_status(args.state_dir)
    return 0


def _bus_client(state_dir: Path) -> "redis.Redis":
    bus = instances.load_bus(state_dir)
    if bus is None:
        raise SdnmigError(f"no bus in {state_dir}: start controllers first "
                          "('sdnmig controllers start'), or give their --state-dir")
    try:
        return bus.client()
    except OSError as e:  # its password file
        raise SdnmigError(f"bus {bus.host}:{bus.port}: {e}") from None


def _print_bus_status(state_dir: Path) -> None:
    """Masters and migrations as the controllers record them; nothing when there is no bus."""
    bus = instances.load_bus(state_dir)
    if bus is None:
        return
    print()
    try:
        st = ops.status(bus.client())
    except SdnmigError as e:
        print(f"bus {bus.host}:{bus.port}: {e}")
        return
    masters = [["switch (bus)", "master"]] + [[d, i] for d, i in st["masters"].items()]
    print(_table(masters) if st["masters"] else "no switch has a MASTER on the bus")
    print()
    if not st["inflight"]:
        print("no migration in flight")
        return
    print(_table([["in flight", "switch", "initiator", "mode", "candidates", "for s"]] +
                 [[r.get("mig", "?"), _dpid(r.get("dpid")), r.get("initiator", "?"),
                   r.get("mode", "?"), ",".join(r.get("candidates") or []) or "-",
                   _age(r.get("started"))] for r in st["inflight"]]))


def _dpid(value: object) -> str:
    return f"{value:#x}" if isinstance(value, int) else "?"


def _age(started: object) -> str:
    return f"{time.time() - started:.1f}" if isinstance(started, (int, float)) else "-"


def _ids(text: Optional[str]) -> Optional[List[str]]:
    return None if text is None else [t.strip() for t in text.split(",")]


def cmd_migrate(args: argparse.Namespace) -> int:
    dpid = ops.parse_dpid(args.switch)
    ops.migrate_body(_ids(args.to), args.fixed, args.auto, args.commit, args.transfer,
                     args.timeout)  # bad input fails here, before the bus is looked for
    record = ops.migrate(_bus_client(args.state_dir), dpid, to=_ids(args.to), fixed=args.fixed,
                         auto=args.auto, commit=args.commit, transfer=args.transfer,
                         timeout=args.timeout)
    print(json.dumps(record, indent=2) if args.json else ops.format_record(record))
    return 0 if record.get("outcome") == "committed" else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    dpid = ops.parse_dpid(args.switch)
    result = ops.cancel(_bus_client(args.state_dir), dpid, args.timeout)
    record = result.get("record")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(ops.format_record(record) if isinstance(record, dict)
              else f"cancel of switch {dpid:#x} accepted")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    records = ops.history(_bus_client(args.state_dir), args.limit)
    if args.json:
        print(json.dumps(records, indent=2))
    elif not records:
        print("no finished migration on the bus")
    else:
        print(_table([["started", "migration", "switch", "initiator", "winner", "outcome",
                       "total ms"]] +
                     [[_when(r.get("started")), r.get("mig", "?"), _dpid(r.get("dpid")),
                       r.get("initiator", "?"), r.get("winner") or "-", r.get("outcome", "?"),
                       ops.ms(r.get("total_ms"))] for r in records]))
    return 0


def _when(started: object) -> str:
    if not isinstance(started, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))


def cmd_api(args: argparse.Namespace) -> int:
    token_file = args.token_file or args.state_dir / api.TOKEN_FILE
    server = api.make_server(api.bus_from_state_dir(args.state_dir), api.load_token(token_file),
                             host=args.host or api.LOOPBACK, port=args.port,
                             allow_remote=args.host is not None,
                             shims=lime.shim_factory(args.state_dir),
                             vnm=vnm.target_factory(args.state_dir))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    host, port = server.server_address[:2]
    print(f"sdnmig api on http://{host}:{port}/ (send 'Authorization: Bearer <token>', "
          f"token in {token_file})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
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
    _add_bus_commands(sub)
    lime_cli.add_commands(sub)
    vnm_cli.add_commands(sub)
    from sdnmig import discovery  # zeroconf is imported only when the parser is built

    discovery.add_command(sub)
    return p


def _add_bus_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The commands that talk to the controllers over the bus (sdnmig.ops)."""
    m = sub.add_parser("migrate", help="migrate a switch to other controllers (ERC)")
    m.add_argument("--switch", required=True, help="datapath id, decimal or 0x-hex")
    to = m.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", help="meta-migration toward these controllers (comma-separated)")
    to.add_argument("--fixed", help="fixed migration toward this one controller")
    to.add_argument("--auto", type=int, metavar="K",
                    help="meta-migration toward the K least-loaded controllers discovered")
    m.add_argument("--commit", default="phase2", choices=wire.COMMIT_POINTS,
                   help="when the winner is chosen (default phase2)")
    m.add_argument("--transfer", default="copy", choices=wire.TRANSFERS,
                   help="state sent in the message, or shared through the bus (default copy)")
    m.add_argument("--timeout", type=float, default=10.0, help="migration deadline, seconds")
    m.add_argument("--json", action="store_true", help="print the migration record as JSON")
    m.set_defaults(func=cmd_migrate)
    c = sub.add_parser("cancel", help="cancel the migration in flight for a switch")
    c.add_argument("--switch", required=True, help="datapath id, decimal or 0x-hex")
    c.add_argument("--timeout", type=float, default=10.0, help="how long to wait for the answer")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cancel)
    h = sub.add_parser("history", help="finished migrations, newest first")
    h.add_argument("--limit", type=int, default=ops.DEFAULT_HISTORY)
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_history)
    a = sub.add_parser("api", help="serve migrate/cancel/status/history over HTTP (token auth)")
    a.add_argument("--port", type=int, default=api.DEFAULT_PORT)
    a.add_argument("--host", help="address to bind (default 127.0.0.1; only this flag allows "
                                  "a non-loopback address)")
    a.add_argument("--token-file", type=Path,
                   help="bearer token file (default <state-dir>/api.token, made if absent)")
    a.set_defaults(func=cmd_api)


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
