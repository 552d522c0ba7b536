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

# require_netns: skips the test (exit 0, with the reason) when `ip netns` cannot be used.
require_netns() {
    command -v ip >/dev/null && ip netns list >/dev/null 2>&1 \
        || { echo "SKIP: 'ip netns' is not available"; exit 0; }
}

# --- Helpers of the dhcpinfo tests (3x-dhcpinfo-*): a foreign DHCP server in the server
# namespace tells provisiond about its leases through `provisiond dhcp-notify`.

# dhcpinfo_serve BIN TMP NS ADDR: writes TMP/provisiond.toml (DHCP off, HTTP on ADDR:8667, no
# TFTP, no TCP API, admin socket TMP/api.sock, [dhcpinfo] socket TMP/dhcpinfo.sock, the
# repository's plugins), starts `serve` in namespace NS with its log in TMP/provisiond.log and
# waits until it is ready. Adds its pid to the caller's `pids` array.
dhcpinfo_serve() {
    local bin=$1 tmp=$2 ns=$3 addr=$4 plugins
    plugins="$(cd "$(dirname "${BASH_SOURCE[0]}")/../plugins" && pwd)"
    mkdir -p "$tmp/data"
    cat >"$tmp/provisiond.toml" <<TOML
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
[dhcp]
mode = "off"
[dhcpinfo]
socket = "$tmp/dhcpinfo.sock"
[log]
level = "info,provisiond::dhcpinfo=debug"
TOML
    ip netns exec "$ns" env -u RUST_LOG -u JOURNAL_STREAM -u NOTIFY_SOCKET \
        "$bin" serve --config "$tmp/provisiond.toml" 2>"$tmp/provisiond.log" &
    pids+=($!)
    wait_for_line "$tmp/provisiond.log" "DHCP lease events on $tmp/dhcpinfo.sock"
    wait_for_line "$tmp/provisiond.log" "store open; ready"
}

# dhcpinfo_dhclient TMP NS IFACE: a real dhclient in NS on IFACE that sends vendor class
# "yealink" and asks for option 66; its hook writes the new_* variables to TMP/dhclient.REASON
# and sets the address. Waits (bounded) for the lease and sets DHCLIENT_IP and DHCLIENT_OPT66.
dhcpinfo_dhclient() {
    local tmp=$1 ns=$2 iface=$3
    cat >"$tmp/dhclient.conf" <<'CONF'
send vendor-class-identifier "yealink";
request subnet-mask, broadcast-address, routers, tftp-server-name;
timeout 60;
CONF
    cat >"$tmp/dhclient-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(reason|interface|new_)' >"$tmp/dhclient.\$reason"
case "\$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        ip addr flush dev "\$interface"
        ip addr add "\$new_ip_address/\$new_subnet_mask" dev "\$interface"
        ;;
    PREINIT) ip link set dev "\$interface" up ;;
esac
exit 0
HOOK
    chmod +x "$tmp/dhclient-hook.sh"
    ip netns exec "$ns" dhclient -d -1 -v -cf "$tmp/dhclient.conf" -sf "$tmp/dhclient-hook.sh" \
        -lf "$tmp/dhclient.leases" -pf "$tmp/dhclient.pid" "$iface" 2>"$tmp/dhclient.log" &
    pids+=($!)
    wait_for_line "$tmp/dhclient.BOUND" "^new_ip_address="
    DHCLIENT_IP=$(sed -n 's/^new_ip_address=//p' "$tmp/dhclient.BOUND")
    DHCLIENT_OPT66=$(sed -n 's/^new_tftp_server_name=//p' "$tmp/dhclient.BOUND")
}

# dhcpinfo_release TMP NS IFACE: `dhclient -r`: stops the dhclient of dhcpinfo_dhclient and
# sends a DHCPRELEASE for its lease.
dhcpinfo_release() {
    local tmp=$1 ns=$2 iface=$3
    ip netns exec "$ns" dhclient -r -v -cf "$tmp/dhclient.conf" -sf "$tmp/dhclient-hook.sh" \
        -lf "$tmp/dhclient.leases" -pf "$tmp/dhclient.pid" "$iface" 2>"$tmp/dhclient-r.log" \
        || fail "dhclient -r failed: $(cat "$tmp/dhclient-r.log")"
    grep -q DHCPRELEASE "$tmp/dhclient-r.log" || fail "dhclient -r sent no DHCPRELEASE: $(cat "$tmp/dhclient-r.log")"
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
