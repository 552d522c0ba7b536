# Helpers sourced by netns-tests/*.test.sh.

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# wait_for_line FILE PATTERN: waits (bounded) until FILE has a line matching PATTERN.
wait_for_line() {
    local file=$1 pattern=$2 i
    for i in $(seq 1 300); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "--- $file:" >&2
    cat "$file" >&2
    fail "no line matching '$pattern' in $file"
}

# lan_up TAG SERVER_CIDR MAC...: one LAN in namespaces of its own. Namespace "$TAG-srv" holds
# bridge "br$TAG" with SERVER_CIDR (e.g. 10.213.0.1/24); for the Nth MAC, namespace "$TAG-cN"
# holds interface "v$TAG-N" with that MAC, cabled to the bridge. Sets LAN_NAMESPACES (every
# namespace made, for lan_down). Names stay under 15 characters for tags of up to 8.
lan_up() {
    local tag=$1 cidr=$2 n=0 mac
    shift 2
    LAN_NAMESPACES=("$tag-srv")
    ip netns add "$tag-srv"
    ip -n "$tag-srv" link set lo up
    ip -n "$tag-srv" link add "br$tag" type bridge forward_delay 0
    ip -n "$tag-srv" addr add "$cidr" dev "br$tag"
    ip -n "$tag-srv" link set "br$tag" up
    for mac in "$@"; do
        n=$((n + 1))
        ip netns add "$tag-c$n"
        LAN_NAMESPACES+=("$tag-c$n")
        ip link add "v$tag-$n" netns "$tag-c$n" address "$mac" type veth \
            peer name "p$tag-$n" netns "$tag-srv"
        ip -n "$tag-c$n" link set lo up
        ip -n "$tag-c$n" link set "v$tag-$n" up
        ip -n "$tag-srv" link set "p$tag-$n" master "br$tag" up
    done
}

# lan_down: deletes the namespaces lan_up made (their interfaces go with them).
lan_down() {
    local ns
    for ns in ${LAN_NAMESPACES[@]+"${LAN_NAMESPACES[@]}"}; do ip netns del "$ns" 2>/dev/null || true; done
}

# require_netns: skips the test (exit 0, with the reason) when `ip netns` cannot be used; fails
# instead when PROVISIOND_NETNS_REQUIRED=1 (CI must not skip).
require_netns() {
    command -v ip >/dev/null && ip netns list >/dev/null 2>&1 && return 0
    [ "${PROVISIOND_NETNS_REQUIRED:-0}" = 1 ] && fail "'ip netns' is not available (apt-get install iproute2)"
    echo "SKIP: 'ip netns' is not available"
    exit 0
}

# netns_test_init [LOG...]: the common start of a test. Sets tmp (a new temp dir) and pids (an
# empty array: the background processes the test starts) and traps EXIT: the pids are killed
# and reaped; on failure the last 30 lines of each TMP/LOG that exists are printed; then the
# namespaces of LAN_NAMESPACES (lan_up's, or the test's own) and the temp dir are deleted.
netns_test_init() {
    tmp=$(mktemp -d)
    pids=()
    NETNS_TEST_LOGS=("$@")
    trap netns_test_cleanup EXIT
}

netns_test_cleanup() {
    local rc=$? pid f
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        for f in ${NETNS_TEST_LOGS[@]+"${NETNS_TEST_LOGS[@]}"}; do
            if [ -e "$tmp/$f" ]; then echo "--- $f (last lines):"; tail -n 30 "$tmp/$f"; fi
        done >&2
    fi
    lan_down
    rm -rf "$tmp"
}

# --- provisiond under test, in the server namespace.

# provisiond_conf TMP ADDR [LOG_LEVEL]: writes TMP/provisiond.toml: data_dir TMP/data (made),
# base_url http://ADDR:8667, the repository's plugins, HTTP on ADDR:8667, no TCP API (admin
# socket TMP/api.sock), no TFTP, [dhcpinfo] socket TMP/dhcpinfo.sock, [log] level LOG_LEVEL
# (default "info,provisiond::dhcp=debug"); then the test's own sections ([dhcp], its pools),
# read from stdin: give them as a heredoc.
provisiond_conf() {
    local tmp=$1 addr=$2 level=${3:-info,provisiond::dhcp=debug} plugins
    plugins="$(cd "$(dirname "${BASH_SOURCE[0]}")/../plugins" && pwd)"
    mkdir -p "$tmp/data"
    {
        cat <<TOML
[general]
data_dir = "$tmp/data"
base_url = "http://$addr:8667"
plugins_dir = "$plugins"
[http]
listen = "$addr:8667"
[api]
enabled = false
socket = "$tmp/api.sock"
[tftp]
enabled = false
[dhcpinfo]
socket = "$tmp/dhcpinfo.sock"
[log]
level = "$level"
TOML
        cat
    } >"$tmp/provisiond.toml"
}

# provisiond_start BIN TMP NS LOG [LINE...]: starts `BIN serve --config TMP/provisiond.toml` in
# namespace NS (without RUST_LOG, JOURNAL_STREAM and NOTIFY_SOCKET) with its log in LOG, adds
# its pid to the caller's pids array and sets PROVISIOND_PID; waits (bounded) until LOG has
# "store open; ready" and a line matching each LINE (e.g. "DHCP server ready").
provisiond_start() {
    local bin=$1 tmp=$2 ns=$3 log=$4 line
    shift 4
    ip netns exec "$ns" env -u RUST_LOG -u JOURNAL_STREAM -u NOTIFY_SOCKET \
        "$bin" serve --config "$tmp/provisiond.toml" 2>"$log" &
    PROVISIOND_PID=$!
    pids+=("$PROVISIOND_PID")
    wait_for_line "$log" "store open; ready"
    for line in "$@"; do wait_for_line "$log" "$line"; done
}

# --- Real ISC dhclients in the client namespaces.

# dhclient_start TMP NAME NS IFACE VENDOR [OPTION...]: starts a dhclient (-d -1: one attempt of
# 60 s) in namespace NS on IFACE, in the background (its pid added to the caller's pids). Its
# configuration TMP/NAME.conf sends vendor class VENDOR ("" = none; "hex:00:00:36:3d:…" for
# bytes) and asks for subnet-mask, broadcast-address, routers, each OPTION (e.g. domain-name)
# and tftp-server-name (option 66); an OPTION NAME=CODE:TYPE (e.g. boot160=160:text) declares
# an option without asking for it, so that the hook sees it when the server sends it anyway;
# its hook TMP/NAME-hook.sh writes the reason, interface and new_* variables to
# TMP/NAME.REASON (e.g. TMP/NAME.BOUND) and, on BOUND, RENEW, REBIND and REBOOT, sets the
# address and the default route (via the first router). Lease file TMP/NAME.leases, pid file
# TMP/NAME.pid, log TMP/NAME.log.
dhclient_start() {
    local tmp=$1 name=$2 ns=$3 iface=$4 vendor=$5 request="subnet-mask, broadcast-address, routers" option
    local declare="" rest
    shift 5
    for option in "$@"; do
        case "$option" in
            *=*:*)
                rest=${option#*=}
                declare+="option ${option%%=*} code ${rest%%:*} = ${rest#*:};"$'\n'
                ;;
            *) request+=", $option" ;;
        esac
    done
    {
        printf '%s' "$declare"
        case "$vendor" in
            "") ;;
            hex:*) echo "send vendor-class-identifier ${vendor#hex:};" ;;
            *) echo "send vendor-class-identifier \"$vendor\";" ;;
        esac
        echo "request $request, tftp-server-name;"
        echo "timeout 60;"
    } >"$tmp/$name.conf"
    cat >"$tmp/$name-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(reason|interface|new_)' >"$tmp/$name.\$reason"
case "\$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        ip addr flush dev "\$interface"
        ip addr add "\$new_ip_address/\$new_subnet_mask" dev "\$interface"
        [ -z "\$new_routers" ] || ip route replace default via "\${new_routers%% *}" dev "\$interface"
        ;;
    PREINIT) ip link set dev "\$interface" up ;;
esac
exit 0
HOOK
    chmod +x "$tmp/$name-hook.sh"
    ip netns exec "$ns" dhclient -d -1 -v -cf "$tmp/$name.conf" -sf "$tmp/$name-hook.sh" \
        -lf "$tmp/$name.leases" -pf "$tmp/$name.pid" "$iface" 2>"$tmp/$name.log" &
    pids+=($!)
}

# dhclient_wait TMP NAME: waits (bounded) for the lease of dhclient_start's NAME and sets
# DHCLIENT_IP and DHCLIENT_OPT66 (option 66) from TMP/NAME.BOUND.
dhclient_wait() {
    local bound="$1/$2.BOUND"
    wait_for_line "$bound" "^new_ip_address="
    DHCLIENT_IP=$(sed -n 's/^new_ip_address=//p' "$bound")
    DHCLIENT_OPT66=$(sed -n 's/^new_tftp_server_name=//p' "$bound")
}

# dhclient_up TMP NAME NS IFACE VENDOR [OPTION...]: dhclient_start, then dhclient_wait.
dhclient_up() {
    dhclient_start "$@"
    dhclient_wait "$1" "$2"
}

# dhclient_release TMP NAME NS IFACE: `dhclient -r`: stops the dhclient of dhclient_start's NAME
# and sends a DHCPRELEASE for its lease (fails unless it did; log in TMP/NAME-r.log).
dhclient_release() {
    local tmp=$1 name=$2 ns=$3 iface=$4
    ip netns exec "$ns" dhclient -r -v -cf "$tmp/$name.conf" -sf "$tmp/$name-hook.sh" \
        -lf "$tmp/$name.leases" -pf "$tmp/$name.pid" "$iface" 2>"$tmp/$name-r.log" \
        || fail "dhclient -r failed: $(cat "$tmp/$name-r.log")"
    grep -q DHCPRELEASE "$tmp/$name-r.log" || fail "dhclient -r sent no DHCPRELEASE: $(cat "$tmp/$name-r.log")"
}

# --- Helpers of the dhcpinfo tests (3x-dhcpinfo-*): a foreign DHCP server in the server
# namespace tells provisiond about its leases through `provisiond dhcp-notify`.

# dhcpinfo_serve BIN TMP NS ADDR: provisiond_conf with DHCP off and dhcpinfo debug logs, then
# provisiond_start with its log in TMP/provisiond.log, waiting until it listens on
# TMP/dhcpinfo.sock.
dhcpinfo_serve() {
    local bin=$1 tmp=$2 ns=$3 addr=$4
    provisiond_conf "$tmp" "$addr" "info,provisiond::dhcpinfo=debug" <<'TOML'
[dhcp]
mode = "off"
TOML
    provisiond_start "$bin" "$tmp" "$ns" "$tmp/provisiond.log" "DHCP lease events on $tmp/dhcpinfo.sock"
}

# dhcpinfo_device TMP MAC IP VENDOR: waits (bounded, 30 s) until provisiond's admin API lists
# the device MAC with IP ("" = no IP) and VENDOR ("" = no vendor); fails with the device list.
dhcpinfo_device() {
    local tmp=$1 mac=$2 ip=$3 vendor=$4 deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if curl -sf --unix-socket "$tmp/api.sock" http://localhost/0.2/dev_mgr/devices \
            >"$tmp/devices.json" && python3 - "$tmp/devices.json" "$mac" "$ip" "$vendor" <<'PY'; then
import json, sys
path, mac, ip, vendor = sys.argv[1:]
devices = json.load(open(path))["devices"]
ok = any(d.get("mac") == mac and (d.get("ip") or "") == ip and (d.get("vendor") or "") == vendor
         for d in devices)
sys.exit(0 if ok else 1)
PY
            return 0
        fi
        sleep 0.1
    done
    fail "no device $mac with ip '$ip' and vendor '$vendor' on the admin API: $(cat "$tmp/devices.json" 2>/dev/null)"
}

# dhcpinfo_counter TMP OUTCOME: prints provisiond_dhcpinfo_events_total{outcome=OUTCOME}.
dhcpinfo_counter() {
    curl -sf --unix-socket "$1/api.sock" http://localhost/metrics \
        | sed -n "s/^provisiond_dhcpinfo_events_total{outcome=\"$2\"} //p"
}

# dhcpinfo_fetch TMP NS MAC URL: the phone in NS fetches its MAC file URL<mac12hex>.cfg (URL:
# the provisioning URL it got, ending in "/"), without a User-Agent of its own (curl's); fails
# unless it gets a non-empty file.
dhcpinfo_fetch() {
    local tmp=$1 ns=$2 file="${3//:/}.cfg" url=$4
    ip netns exec "$ns" curl -sf --max-time 10 -o "$tmp/$file" "$url$file" \
        || fail "the phone could not fetch $url$file: $(tail -n 20 "$tmp/provisiond.log")"
    [ -s "$tmp/$file" ] || fail "$url$file is empty"
}
