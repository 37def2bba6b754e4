"""What Open vSwitch says about bridges and their controllers (ovs-vsctl, JSON output)."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List

from sdnmig.errors import SdnmigError


def vsctl(*args: str, timeout: float = 10) -> str:
    if not shutil.which("ovs-vsctl"):
        raise SdnmigError("ovs-vsctl not found: run 'sudo make install'")
    out = subprocess.run(["ovs-vsctl", f"--timeout={int(timeout)}", *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()[-1:] or ["no output"]
        if "database connection failed" in out.stderr or "No such file" in out.stderr:
            raise SdnmigError("Open vSwitch is not running: run 'sudo make install' "
                              "(it starts ovs-vswitchd)")
        raise SdnmigError(f"ovs-vsctl {' '.join(args)}: {err[0]}")
    return out.stdout


def _rows(table: str, columns: str) -> List[Dict[str, object]]:
    data = json.loads(vsctl("--format=json", f"--columns={columns}", "list", table))
    names = data["headings"]
    return [dict(zip(names, row)) for row in data["data"]]


def _atom(v: object) -> object:
    """Decode OVSDB JSON: ["uuid", x] -> x, ["set", [...]] -> list, ["map", ...] -> dict."""
    if isinstance(v, list) and len(v) == 2 and v[0] in ("uuid", "set", "map"):
        kind, val = v
        if kind == "uuid":
            return val
        if kind == "set":
            return [_atom(x) for x in val]
        return {_atom(k): _atom(x) for k, x in val}
    return v


def _as_list(v: object) -> list:
    v = _atom(v)
    return v if isinstance(v, list) else [v]


@dataclass(frozen=True)
class ControllerLink:
    target: str
    role: str  # master / slave / other (OVS's word for EQUAL) / '' when not connected
    connected: bool


def controller_links() -> Dict[str, List[ControllerLink]]:
    """bridge name -> its controllers as OVS sees them now."""
    ctrls = {}
    for row in _rows("controller", "_uuid,target,role,is_connected"):
        role = _atom(row["role"])
        ctrls[_atom(row["_uuid"])] = ControllerLink(
            str(_atom(row["target"])), role if isinstance(role, str) else "",
            bool(_atom(row["is_connected"])))
    out = {}
    for row in _rows("bridge", "name,controller"):
        out[str(row["name"])] = [ctrls[u] for u in _as_list(row["controller"]) if u in ctrls]
    return out


def bridge_dpids() -> Dict[str, int]:
    out = {}
    for row in _rows("bridge", "name,datapath_id"):
        dpid = _atom(row["datapath_id"])
        if isinstance(dpid, str) and dpid:
            out[str(row["name"])] = int(dpid, 16)
    return out
