#!/usr/bin/env bash
# Idempotent set-up behind `make install`: apt packages, Open vSwitch running, .venv with the project.
# Each step checks before it acts, so a repeated run costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "install: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (apt, Open vSwitch): run 'sudo make install'"

APT_PACKAGES=(openvswitch-switch mininet redis-server iperf3 tcpdump iputils-ping ethtool python3-venv python3-dev iproute2 procps util-linux)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install: apt packages: ${missing[*]}"
    apt-get update -qq || die "apt-get update failed: check the package mirror"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# Open vSwitch without systemd; the kernel module is absent here, bridges use the userspace datapath.
if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
    echo "install: starting Open vSwitch"
    /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/tmp/sdnmig-ovs-start.log 2>&1 || true
    ovs-vsctl --timeout=10 show >/dev/null 2>&1 \
        || die "Open vSwitch did not start (log: /tmp/sdnmig-ovs-start.log)"
fi

# Debian's python3 with system site packages, so that `import mininet` works inside the venv.
stamp=.venv/.sdnmig-installed
want=$(cat setup.cfg setup.py | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "install: building .venv"
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[osken,test,plot]' \
        || die "pip install into .venv failed"
    .venv/bin/python -c "import mininet.net, os_ken, redis, zeroconf" \
        || die ".venv is missing a dependency"
    echo "$want" > "$stamp"
fi
echo "install: ok (OVS $(ovs-vsctl --version | head -1 | awk '{print $NF}'), $(.venv/bin/python --version))"
