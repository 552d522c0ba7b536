#!/usr/bin/env bash
# Soak: one daemon under mixed load and abuse for a while; prints its memory every 30 s.
# Figures only, nothing asserted. All traffic stays on 127.0.0.1 and the daemon's own sockets.
#   bash benches/soak.sh [seconds]      (default 600)
# Load, all at once, each in a loop until the time is up:
# - `bench http`: 2,000 phones created once, then keep-alive fetches of their files;
# - `bench dhcp`: relayed DORA of 5,000 clients (renewals after the first pass);
# - REST writes over the admin socket: a device created, read, changed and deleted;
# - abuse (python3): malformed TFTP and dhcpinfo datagrams, unknown API tokens, oversized and
#   malformed API bodies, over-long query strings, hostile provisioning paths.
# Columns: seconds, VmRSS, VmHWM (peak RSS) in MiB, threads, and what each load did so far.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
cargo build --release --quiet
bin=$PWD/target/release/provisiond
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, int(sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
http_port=$(free_port 1)
api_port=$(free_port 1)
tftp_port=$(free_port 2)
dhcp_port=$(free_port 2)
cat >"$work/provisiond.toml" <<TOML
[general]
data_dir = "$work/data"
plugins_dir = "$PWD/plugins"
autocreate_per_second = 1000000
[http]
listen = "127.0.0.1:$http_port"
[api]
listen = "127.0.0.1:$api_port"
socket = "$work/api.sock"
[tftp]
listen = "127.0.0.1:$tftp_port"
[dhcpinfo]
socket = "$work/dhcpinfo.sock"
[dhcp]
mode = "server"
port = $dhcp_port
[[dhcp.pools]]
subnet = "10.214.0.0/16"
ranges = [{ start = "10.214.0.10", end = "10.214.255.250" }]
lease_time = 86400
[log]
level = "warn"
TOML
"$bin" serve --config "$work/provisiond.toml" 2>"$work/daemon.log" &
daemon=$!
pids+=("$daemon")
ready() { [ -S "$work/api.sock" ] && ss -Hlnu "sport = :$dhcp_port" | grep -q . && ss -Hlnt "sport = :$http_port" | grep -q .; }
for _ in $(seq 1 100); do
    ready && break
    sleep 0.1
done
ready || { echo "provisiond did not start:"; cat "$work/daemon.log"; exit 1; }
end=$((SECONDS + seconds))

loop() { # loop NAME COMMAND...: runs COMMAND until the time is up, counting passes
    local name=$1 n=0
    shift
    while [ "$SECONDS" -lt "$end" ]; do
        "$@" >>"$work/$name.out" 2>&1 || true
        n=$((n + 1))
        echo "$n" >"$work/$name.count"
    done
}
loop http "$bin" bench http --target "127.0.0.1:$http_port" --devices 2000 --requests 20000 --concurrency 32 &
pids+=($!)
loop dhcp "$bin" bench dhcp --target "127.0.0.1:$dhcp_port" --giaddr 10.214.0.1 --clients 5000 --concurrency 64 &
pids+=($!)
rest_pass() {
    local sock=$work/api.sock base=http://localhost/api/provd/0.2 type="Content-Type: application/vnd.proformatique.provd+json"
    local mac id
    for i in $(seq 1 50); do
        mac=$(printf '02:50:%02x:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((i / 256)) $((i % 256)))
        id=$(curl -s --unix-socket "$sock" -H "$type" -d "{\"device\": {\"mac\": \"$mac\"}}" "$base/dev_mgr/devices" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id",""))' 2>/dev/null) || continue
        [ -n "$id" ] || continue
        curl -s --unix-socket "$sock" "$base/dev_mgr/devices/$id" >/dev/null
        curl -s --unix-socket "$sock" -X PUT -H "$type" -d "{\"device\": {\"id\": \"$id\", \"mac\": \"$mac\", \"description\": \"soak $i\"}}" "$base/dev_mgr/devices/$id" >/dev/null
        curl -s --unix-socket "$sock" -X DELETE "$base/dev_mgr/devices/$id" >/dev/null
    done
}
loop rest rest_pass &
pids+=($!)
cat >"$work/abuse.py" <<'PY'
import os, random, socket, sys, http.client
tftp_port, api_port, http_port, dgram = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rnd = random.Random(7)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def garbage(n):
    return bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(n)))
for _ in range(200):
    udp.sendto(rnd.choice([b"\x00\x01" + garbage(40), b"\x00\x09junk", garbage(600), b"\x00\x01a\x00octet\x00blksize\x00999999\x00"]), ("127.0.0.1", tftp_port))
    try:
        unix.sendto(garbage(300), dgram)
    except OSError:
        pass
def request(port, method, path, headers=None, body=None):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request(method, path, body=body, headers=headers or {})
        c.getresponse().read()
        c.close()
    except Exception:
        pass
media = {"Content-Type": "application/vnd.proformatique.provd+json"}
for i in range(20):
    request(api_port, "GET", "/api/provd/0.2/dev_mgr/devices", {"X-Auth-Token": "wrong-%d" % rnd.getrandbits(32)})
    request(api_port, "POST", "/api/provd/0.2/dev_mgr/devices", dict(media, **{"X-Auth-Token": "nope"}), b"{" * 70000)
    request(api_port, "POST", "/api/provd/0.2/dev_mgr/devices", dict(media, **{"X-Auth-Token": "nope"}), b'{"device": {}} trailing')
    request(api_port, "GET", "/api/provd/0.2/dev_mgr/devices?q=" + "a" * 20000)
    request(http_port, "GET", "/../../etc/passwd")
    request(http_port, "GET", "/" + "%2e%2e/" * 50 + "x.cfg", {"User-Agent": "Yealink SIP-T54W 96.86.0.70 80:5e:c0:00:00:01"})
    request(http_port, "GET", "/%ff%fe.cfg")
PY
loop abuse python3 "$work/abuse.py" "$tftp_port" "$api_port" "$http_port" "$work/dhcpinfo.sock" &
pids+=($!)

mib() { awk -v k="$1" '$1 == k":" { printf "%.1f", $2 / 1024 }' "/proc/$daemon/status"; }
count() { cat "$work/$1.count" 2>/dev/null || echo 0; }
printf '%6s %9s %9s %7s %6s %6s %6s %6s\n' seconds "RSS MiB" "peak MiB" threads http dhcp rest abuse
start=$SECONDS
while [ "$SECONDS" -lt "$end" ]; do
    printf '%6d %9s %9s %7s %6s %6s %6s %6s\n' $((SECONDS - start)) "$(mib VmRSS)" "$(mib VmHWM)" \
        "$(awk '$1 == "Threads:" { print $2 }' "/proc/$daemon/status")" \
        "$(count http)" "$(count dhcp)" "$(count rest)" "$(count abuse)"
    sleep 30
done
printf '%6d %9s %9s (end)\n' $((SECONDS - start)) "$(mib VmRSS)" "$(mib VmHWM)"
echo "log lines (level warn): $(wc -l <"$work/daemon.log"), $(du -k "$work/daemon.log" | cut -f1) KiB; store: $(du -sh "$work/data" | cut -f1)"
echo "last http pass: $(grep -E 'req/s' "$work/http.out" | tail -n 1)"
echo "last dhcp pass: $(grep -E 'DORA/s' "$work/dhcp.out" | tail -n 1)"
