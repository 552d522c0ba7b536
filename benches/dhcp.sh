#!/usr/bin/env bash
# DHCPv4 leases per second of provisiond, Kea (memfile, persisted) and dnsmasq, in the same run,
# each driven by perfdhcp acting as a relay agent (full DORA, option 118 selects the pool), then
# by `provisiond bench dhcp` (provisiond and Kea). Prints figures; asserts nothing. Run as root: installs kea-admin
# (perfdhcp), kea-dhcp4-server and dnsmasq-base, and creates two network namespaces.
#   bash benches/dhcp.sh [clients] [seconds per perfdhcp rate step]
#
# Why namespaces: off port 67, Kea answers a relay at giaddr:67 whatever its own port and
# dnsmasq at giaddr:<its own port>, so on 127.0.0.1 the relay would have to share a port with
# the server. Here every server listens on port 67 in namespace "srv" (10.213.40.1/24) and the
# load generators are a relay on 10.213.40.2:67 in namespace "cli", joined by a veth pair, as
# in production; all three servers run exactly the same way. No traffic leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-50000}
step=${2:-5}
rates=(1000 2000 4000 6000 8000 11000 15000 20000)
export DEBIAN_FRONTEND=noninteractive
for p in kea-admin kea-dhcp4-server dnsmasq-base; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
        apt-get update -qq && apt-get install -y -qq --no-install-recommends kea-admin kea-dhcp4-server dnsmasq-base
        break
    }
done
# The packaged Kea service must not run in the background (no-op without systemd).
systemctl stop kea-dhcp4-server 2>/dev/null || true

cargo build --release --quiet
bin=$PWD/target/release/provisiond
work=$(mktemp -d)
srv=pvdb-srv-$$
cli=pvdb-cli-$$
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$srv"
ip netns add "$cli"
ip link add vsrv netns "$srv" type veth peer name vcli netns "$cli"
ip -n "$srv" addr add 10.213.40.1/24 dev vsrv
ip -n "$cli" addr add 10.213.40.2/24 dev vcli
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set vsrv up
ip -n "$cli" link set vcli up

# The pool: 10.214.0.0/15 (131,056 addresses), room for perfdhcp's and bench dhcp's clients.
first=10.214.0.10
last=10.215.255.250
subnet_hex=0ad60000 # 10.214.0.0, option 118

wait_port() { # wait_port PORT: UDP PORT listening in the server namespace
    for _ in $(seq 1 100); do
        ip netns exec "$srv" ss -Hlnu "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    echo "port $1 not listening" >&2
    return 1
}

declare -A best
# ladder NAME: perfdhcp at increasing rates, $step seconds each, until the server falls below
# 90 % of the offered rate; the server's figure is the best completed-DORA rate.
ladder() {
    local name=$1 rate out got drops top=0
    printf '%-10s %8s %12s %18s\n' "" "offered/s" "leases/s" "drops DO / RA"
    for rate in "${rates[@]}"; do
        out=$(ip netns exec "$cli" perfdhcp -4 -l 10.213.40.2 -o "118,$subnet_hex" \
            -R "$clients" -r "$rate" -p "$step" 10.213.40.1 2>&1 || true)
        got=$(awk '/^Rate:/ { print $2; exit }' <<<"$out")
        got=${got:-0}
        drops=$(awk '/^drops ratio:/ { printf "%s%s", sep, $3 $4; sep = " / " }' <<<"$out")
        printf '%-10s %8d %12.0f %18s\n' "$name" "$rate" "$got" "$drops"
        top=$(awk -v a="$top" -v b="$got" 'BEGIN { print (b > a ? b : a) }')
        if awk -v g="$got" -v r="$rate" 'BEGIN { exit !(g < 0.9 * r) }'; then break; fi
        sleep 1 # let the server drain its queue
    done
    best[$name]=$top
}

bench() { # bench: provisiond bench dhcp from the relay address, pool chosen by option 82
    sleep 2 # replies to perfdhcp's last, overloaded step
    ip netns exec "$cli" env PROVISIOND_BENCH_ANY_TARGET=1 "$bin" bench dhcp \
        --target 10.213.40.1:67 --bind 10.213.40.2:67 --giaddr 10.213.40.2 \
        --link-selection 10.214.0.1 --clients "$clients" --concurrency 200
}

stop() { # stop PID
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

echo "== perfdhcp: $clients clients, DORA through a relay, ${step} s per rate step"

echo "-- provisiond (serve, DHCP only, sled store)"
mkdir -p "$work/provisiond/data"
cat >"$work/provisiond/provisiond.toml" <<TOML
[general]
data_dir = "$work/provisiond/data"
plugins_dir = "$PWD/plugins"
[http]
enabled = false
[tftp]
enabled = false
[api]
enabled = false
socket = "$work/provisiond/data/api.sock"
[dhcpinfo]
enabled = false
socket = "$work/provisiond/data/dhcpinfo.sock"
[log]
level = "warn"
[dhcp]
mode = "server"
port = 67
[[dhcp.pools]]
subnet = "10.214.0.0/15"
ranges = [{ start = "$first", end = "$last" }]
lease_time = 86400
TOML
ip netns exec "$srv" "$bin" serve --config "$work/provisiond/provisiond.toml" 2>"$work/provisiond/log" &
pid=$!
pids+=($pid)
wait_port 67
ladder provisiond
echo "-- provisiond bench dhcp (fresh clients)"
bench
stop "$pid"

echo "-- Kea $(kea-dhcp4 -v) (memfile, persist = true, default single-threaded)"
mkdir -p "$work/kea"
cat >"$work/kea/kea-dhcp4.json" <<JSON
{ "Dhcp4": {
  "interfaces-config": { "interfaces": ["vsrv"], "dhcp-socket-type": "udp" },
  "lease-database": { "type": "memfile", "persist": true, "name": "$work/kea/leases4.csv", "lfc-interval": 0 },
  "valid-lifetime": 86400,
  "subnet4": [ { "id": 1, "subnet": "10.214.0.0/15", "pools": [ { "pool": "$first - $last" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                 "output_options": [ { "output": "$work/kea/kea.log" } ] } ]
} }
JSON
KEA_PIDFILE_DIR=$work/kea KEA_LOCKFILE_DIR=$work/kea \
    ip netns exec "$srv" kea-dhcp4 -c "$work/kea/kea-dhcp4.json" >"$work/kea/out" 2>&1 &
pid=$!
pids+=($pid)
wait_port 67
ladder kea
echo "-- provisiond bench dhcp against Kea (fresh clients)"
bench
stop "$pid"

echo "-- dnsmasq $(dnsmasq --version | awk 'NR == 1 { print $3 }') (lease file, no ping check)"
mkdir -p "$work/dnsmasq"
# no-ping: dnsmasq would otherwise ping every address before offering it (Kea and provisiond
# do not). user=root: the lease file stays in the private temporary directory.
cat >"$work/dnsmasq/dnsmasq.conf" <<CONF
port=0
interface=vsrv
dhcp-range=$first,$last,255.254.0.0,24h
dhcp-leasefile=$work/dnsmasq/leases
dhcp-lease-max=1000000
dhcp-authoritative
no-ping
user=root
pid-file=$work/dnsmasq/pid
log-facility=$work/dnsmasq/log
CONF
ip netns exec "$srv" dnsmasq -d -C "$work/dnsmasq/dnsmasq.conf" >"$work/dnsmasq/out" 2>&1 &
pid=$!
pids+=($pid)
wait_port 67
ladder dnsmasq
# No bench dhcp here: dnsmasq rewrites its whole lease file for every change, so
# $clients more DORAs would take minutes.
stop "$pid"

echo "== leases/s (best perfdhcp step)"
for name in provisiond kea dnsmasq; do printf '%-10s %8.0f\n' "$name" "${best[$name]}"; done
awk -v p="${best[provisiond]}" -v k="${best[kea]}" -v d="${best[dnsmasq]}" 'BEGIN {
    printf "provisiond/Kea     %.2f (target >= 1)\n", (k > 0 ? p / k : 0)
    printf "provisiond/dnsmasq %.2f (target >= 2)\n", (d > 0 ? p / d : 0)
}'
