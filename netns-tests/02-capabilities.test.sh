# As root, in a private network namespace: provisiond started the way provisiond.service
# starts it (an unprivileged user, AmbientCapabilities= and CapabilityBoundingSet=
# CAP_NET_BIND_SERVICE CAP_NET_RAW, NoNewPrivileges), via setpriv, binds the privileged ports
# HTTP 80 and TFTP 69 on 127.0.0.1, then every thread's CapEff/CapPrm/CapAmb in
# /proc/<pid>/task/*/status equals what it logged ("capabilities after binding: none kept
# (CapEff 0000000000000000)"), and it still serves phones. A root daemon gives up its
# capabilities and its bounding set too.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
command -v setpriv >/dev/null || fail "setpriv (util-linux) is missing"
tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
# nobody must reach the binary and the repository's plugins: copy them.
install -m 0755 "$bin" "$tmp/provisiond"
cp -R "$(dirname "$0")/../plugins" "$tmp/plugins"
mkdir "$tmp/data" "$tmp/run"
chown 65534:65534 "$tmp/data" "$tmp/run"
chmod 0755 "$tmp"

cat >"$tmp/provisiond.toml" <<TOML
[general]
data_dir = "$tmp/data"
plugins_dir = "$tmp/plugins"
[http]
listen = "127.0.0.1:80"
[tftp]
listen = "127.0.0.1:69"
[api]
listen = "127.0.0.1:8666"
socket = "$tmp/run/api.sock"
[dhcpinfo]
socket = "$tmp/run/dhcpinfo.sock"
TOML

# cap_eff_of_threads PID: the distinct "CapEff CapPrm CapAmb" triples of PID's threads.
cap_sets_of_threads() {
    local task
    for task in /proc/"$1"/task/*; do
        awk '/^CapEff:/{e=$2} /^CapPrm:/{p=$2} /^CapAmb:/{a=$2} END{print e, p, a}' "$task/status" 2>/dev/null || true
    done | sort -u
}

# start_daemon LOG CMD…: starts CMD in a new network namespace (loopback up); sets $pid.
start_daemon() {
    local log=$1
    shift
    unshare --net -- bash -c 'ip link set lo up && exec "$@"' _ \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@" 2>"$log" &
    pid=$!
}

# check_dropped LOG: the logged CapEff is every thread's CapEff, CapPrm and CapAmb.
check_dropped() {
    local log=$1 line logged sets
    wait_for_line "$log" "store open; ready"
    line=$(grep "capabilities after binding" "$log") || fail "no capability line: $(cat "$log")"
    logged=$(echo "$line" | sed -n 's/.*(CapEff \([0-9a-f]\{16\}\)).*/\1/p')
    [ -n "$logged" ] || fail "no CapEff in: $line"
    echo "$line" | grep -q "capabilities after binding: none kept" || fail "capabilities kept: $line"
    sets=$(cap_sets_of_threads "$pid")
    [ "$sets" = "$logged $logged $logged" ] || fail "threads' CapEff CapPrm CapAmb: $sets; logged CapEff $logged"
    [ "$(find /proc/"$pid"/task -mindepth 1 -maxdepth 1 | wc -l)" -gt 1 ] || fail "one thread only?"
}

stop_daemon() {
    local log=$1 status=0
    kill -TERM "$pid"
    wait "$pid" || status=$?
    pid=
    [ "$status" -eq 0 ] || fail "exit status $status: $(cat "$log")"
    grep -q "stopped cleanly" "$log" || fail "no clean stop: $(cat "$log")"
}

# 1. As the unit runs it: nobody, with the unit's capabilities and nothing else.
start_daemon "$tmp/unit.log" setpriv --reuid=65534 --regid=65534 --clear-groups \
    --inh-caps=-all,+net_bind_service,+net_raw --ambient-caps=-all,+net_bind_service,+net_raw \
    --bounding-set=-all,+net_bind_service,+net_raw --no-new-privs \
    "$tmp/provisiond" serve --config "$tmp/provisiond.toml"
check_dropped "$tmp/unit.log"
grep -q "HTTP provisioning on 127.0.0.1:80" "$tmp/unit.log" || fail "no HTTP on port 80: $(cat "$tmp/unit.log")"
grep -q "TFTP provisioning on 127.0.0.1:69" "$tmp/unit.log" || fail "no TFTP on port 69: $(cat "$tmp/unit.log")"
# The bounding set stays the unit's (the daemon has no CAP_SETPCAP to shrink it).
bnd=$(awk '/^CapBnd:/{print $2}' /proc/"$pid"/status)
[ "$bnd" = "0000000000002400" ] || fail "CapBnd $bnd, want the unit's 0000000000002400"
# Still serving after the drop, on the privileged port.
code=$(nsenter --net=/proc/"$pid"/ns/net curl -s -o "$tmp/cfg" -w '%{http_code}' \
    -A "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33" http://127.0.0.1:80/805ec0112233.cfg) \
    || fail "curl failed"
[ "$code" = 200 ] || fail "HTTP $code for the Yealink MAC file: $(cat "$tmp/unit.log")"
grep -q "#!version:1.0.0.1" "$tmp/cfg" || fail "not a Yealink file: $(head -3 "$tmp/cfg")"
[ "$(stat -c %U "$tmp/data/db")" = nobody ] || fail "store not owned by the unprivileged user"
stop_daemon "$tmp/unit.log"

# 2. Without the capability, port 80 is refused: the test above really needed it.
start_daemon "$tmp/nocap.log" setpriv --reuid=65534 --regid=65534 --clear-groups \
    --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs \
    "$tmp/provisiond" serve --config "$tmp/provisiond.toml"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -ne 0 ] || fail "port 80 bound without CAP_NET_BIND_SERVICE"
grep -q "cannot listen on http.listen 127.0.0.1:80" "$tmp/nocap.log" || fail "$(cat "$tmp/nocap.log")"

# 3. As root: every capability and the bounding set are given up after binding (its store
# then has to be root's own: a root daemon keeps no CAP_DAC_OVERRIDE).
sed "s|$tmp/data|$tmp/rootdata|" "$tmp/provisiond.toml" >"$tmp/root.toml"
start_daemon "$tmp/root.log" "$tmp/provisiond" serve --config "$tmp/root.toml"
check_dropped "$tmp/root.log"
bnd=$(awk '/^CapBnd:/{print $2}' /proc/"$pid"/status)
[ "$bnd" = "0000000000000000" ] || fail "a root daemon kept its bounding set: CapBnd $bnd"
stop_daemon "$tmp/root.log"
