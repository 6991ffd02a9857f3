#!/usr/bin/env bash
# Simulated hosts on this machine, for multi-host runs and tests (root only).
#
#   scripts/hosts.sh up N      N hosts h1…hN: network namespaces cohort-h1…, each with eth0 on a
#                              bridge and the address 198.18.7.I/24 (hI); the bridge is .254
#   scripts/hosts.sh down      kills every process in them and removes them and the bridge
#   scripts/hosts.sh list      the hosts that are up, with their addresses
#   scripts/hosts.sh run H CMD…  runs CMD on host H (as ssh H CMD would)
#   scripts/hosts.sh ray-up [CPUS]  a Ray cluster over the hosts that are up: the head on h1
#                              (GCS at 198.18.7.1:6379), every other host a node; CPUS each
#                              (default 2); token auth off. `down` ends it with the hosts.
#
# 198.18.0.0/15 is the range RFC 2544 sets aside for network benchmarks: it is routed nowhere,
# so nothing here can reach or shadow a real network. Traffic stays between the hosts and the
# bridge. Each command run on a host gets the host's name as its hostname (a UTS namespace of
# its own), so machine identity (gethostname, MPI's processor name) tells hosts apart as on a
# real cluster. `scripts/host-agent` is the same `run`, called like ssh (`AGENT [options] HOST
# CMD…`): give it to mpirun as `--mca plm_rsh_agent scripts/host-agent`.
set -euo pipefail

PREFIX=198.18.7
BRIDGE=cohortbr0
NETNS_PREFIX=cohort-

die() { echo "hosts.sh: $*" >&2; exit 1; }

hosts_up() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NETNS_PREFIX}h[0-9]*$" | sed "s/^${NETNS_PREFIX}//" | sort -V || true
}

address_of() {
    local h=$1
    [[ $h =~ ^h([0-9]+)$ ]] || die "expected a host name h1, h2, …, found '$h'"
    echo "${PREFIX}.${BASH_REMATCH[1]}"
}

up() {
    local n=${1:-}
    [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 250 )) || die "up: expected a host count 1…250, found '${n}'"
    [ "$(id -u)" = 0 ] || die "up: needs root (network namespaces), running as $(id -un)"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "${PREFIX}.254/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    for i in $(seq 1 "$n"); do
        local ns="${NETNS_PREFIX}h$i" veth="cohortv$i"
        ip netns list | awk '{print $1}' | grep -qx "$ns" && continue
        ip netns add "$ns"
        ip link delete "$veth" 2>/dev/null || true  # a pair left by a namespace still being torn down
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        ip -n "$ns" addr add "${PREFIX}.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
    list
}

down() {
    for h in $(hosts_up); do
        local ns="${NETNS_PREFIX}$h"
        # Everything still running on the host goes with it.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        # Deleting the bridge's end removes the pair at once (a namespace's devices go later).
        ip link delete "cohortv${h#h}" 2>/dev/null || true
        ip netns delete "$ns"
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    rm -rf /tmp/cohort-ray-h*
    return 0
}

ray_up() {
    local cpus=${1:-2}
    [[ $cpus =~ ^[0-9]+$ ]] && (( cpus >= 1 )) || die "ray-up: expected a CPU count ≥ 1, found '$cpus'"
    command -v ray >/dev/null || die "ray-up: the ray command is missing (pip install 'ray[cpp]')"
    local all; all=$(hosts_up)
    [ -n "$all" ] || die "ray-up: no hosts are up (scripts/hosts.sh up N)"
    local common="--num-cpus=$cpus --disable-usage-stats"
    for h in $all; do
        local address; address=$(address_of "$h")
        # A temp dir per host: the hosts share one filesystem.
        if [ "$h" = h1 ]; then
            (run h1 "RAY_AUTH_MODE=disabled ray start --head --node-ip-address=$address --port=6379 --temp-dir=/tmp/cohort-ray-h1 --include-dashboard=false $common") >/tmp/cohort-ray-h1.log 2>&1 \
                || die "ray-up: the head on h1 did not start: $(tail -5 /tmp/cohort-ray-h1.log)"
        else
            (run "$h" "RAY_AUTH_MODE=disabled ray start --address=${PREFIX}.1:6379 --node-ip-address=$address --temp-dir=/tmp/cohort-ray-$h $common") >"/tmp/cohort-ray-$h.log" 2>&1 \
                || die "ray-up: the node on $h did not join: $(tail -5 "/tmp/cohort-ray-$h.log")"
        fi
    done
    echo "ray ${PREFIX}.1:6379"
}

list() {
    for h in $(hosts_up); do echo "$h $(address_of "$h")"; done
}

run() {
    local h=${1:-}
    shift || true
    [ -n "$h" ] || die "run: expected a host and a command"
    address_of "$h" >/dev/null
    ip netns list | awk '{print $1}' | grep -qx "${NETNS_PREFIX}$h" || die "run: host $h is not up (scripts/hosts.sh up N)"
    [ $# -gt 0 ] || die "run: expected a command to run on $h"
    # ssh runs its command through a shell, joined by spaces: so does this.
    exec ip netns exec "${NETNS_PREFIX}$h" unshare --uts /bin/sh -c "hostname $h && exec /bin/sh -c \"\$0\"" "$*"
}

case "${1:-}" in
    up) up "${2:-}" ;;
    down) down ;;
    list) list ;;
    run) shift; run "$@" ;;
    ray-up) ray_up "${2:-}" ;;
    *) die "expected up N, down, list, run HOST CMD… or ray-up [CPUS], found '${1:-}'" ;;
esac
