#!/usr/bin/env bash
# Boot storm: N new phones powered on at once against one daemon (release build) on the
# default settings, DHCP in server mode; each phone does a DORA through a relay address, then
# fetches its MAC file over HTTP with a Yealink User-Agent (`provisiond bench storm`). Then the
# same N phones, now known, rebooting at once (a power cut). Prints the time until every
# phone is configured, p50/p99 per phone and the refusals, then the daemon's counters (store
# flushes, autocreation). Asserts nothing. All traffic on 127.0.0.1; no root needed.
#   bash benches/storm.sh [phones]
# STORM_LOG=FILE keeps the daemon's log (RUST_LOG is passed on, e.g.
# RUST_LOG=info,provisiond::dhcp::batch=debug for the DHCP batches' identification times).
#
# The pool is on loopback (127.64.0.0/16, selected by giaddr 127.64.0.1): each phone fetches
# its file from its leased address, as a real phone does, so identification finds the
# address it already has instead of rewriting it to 127.0.0.1 at every boot.
set -euo pipefail
cd "$(dirname "$0")/.."
phones=${1:-1000}

cargo build --release --quiet
bin=$PWD/target/release/provisiond
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "${STORM_LOG:-}" ] && [ -f "$work/log" ]; then cp "$work/log" "$STORM_LOG"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A free UDP port for DHCP (dhcp.port cannot be 0).
dhcp_port=
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 20000))
    if ! ss -Hlnu "sport = :$candidate" | grep -q .; then
        dhcp_port=$candidate
        break
    fi
done
[ -n "$dhcp_port" ] || { echo "no free UDP port" >&2; exit 1; }

# Only what a daemon on this machine needs to differ from the shipped defaults: paths and
# loopback listeners, DHCP on. Autocreation, the store and logging keep their defaults.
cat >"$work/provisiond.toml" <<TOML
[general]
data_dir = "$work/data"
plugins_dir = "$PWD/plugins"
[http]
listen = "127.0.0.1:0"
[api]
listen = "127.0.0.1:0"
socket = "$work/api.sock"
[tftp]
listen = "127.0.0.1:0"
[dhcpinfo]
socket = "$work/dhcpinfo.sock"
[dhcp]
mode = "server"
port = $dhcp_port
[[dhcp.pools]]
subnet = "127.64.0.0/16"
ranges = [{ start = "127.64.0.10", end = "127.64.255.250" }]
lease_time = 86400
TOML

"$bin" serve --config "$work/provisiond.toml" 2>"$work/log" &
pid=$!
http=
for _ in $(seq 1 200); do
    http=$(sed -n 's/.*HTTP provisioning on \([0-9.:]*\).*/\1/p' "$work/log" | head -n1)
    grep -q "DHCP server ready" "$work/log" && [ -n "$http" ] && break
    sleep 0.05
done
grep -q "DHCP server ready" "$work/log" || { cat "$work/log" >&2; exit 1; }

metrics() { # the daemon's counters of interest
    curl -sS --unix-socket "$work/api.sock" http://localhost/metrics |
        grep -E '^provisiond_(store_flush|autocreate|dhcp_lease_events)' | sed 's/^/    /'
}

storm() { # storm TITLE
    echo "-- $1"
    "$bin" bench storm --dhcp "127.0.0.1:$dhcp_port" --http "$http" --phones "$phones" --run 7
    metrics
}

echo "== boot storm: $phones phones, DHCP 127.0.0.1:$dhcp_port, HTTP $http, default settings"
storm "new phones (cold: every phone unknown)"
sleep 2 # idle a moment, as phones take to reboot
storm "the same phones rebooting (power cut: every phone known)"
ss -Hltn "sport = :${http##*:}" | sed "s/^/    listener: /"
kill "$pid"
wait "$pid" || true
pid=
echo "-- log: $(wc -l <"$work/log") lines, $(grep -c 'autocreation limit' "$work/log" || true) about the autocreation limit"
