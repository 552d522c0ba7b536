# Reservations, DHCPDECLINE and address reuse of provisiond's DHCP server, with real clients in
# network namespaces of their own, on one bridge (10.213.23.0/25, provisiond .1):
#
#   c1 dhclient, MAC of a reservation      → exactly 10.213.23.50 and its host name (option 12)
#   c2 "squatter", 10.213.23.100 set by hand (first address of the 3-address range .100-.102)
#   c3 busybox udhcpc -a (ARP check)       → ACKed .100, finds c2 there, sends DHCPDECLINE,
#                                            then gets another address (.101)
#   c4 dhclient                            → .102, the last free one: the range is full
#   then c4 releases .102, c3 releases .101 (one second later), and
#   c5 dhclient (new MAC)                  → .102: released addresses are reused least
#                                            recently used first (not lowest first), and the
#                                            declined .100 stays quarantined
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
here="$(cd "$(dirname "$0")" && pwd)"
plugins="$(cd "$here/../plugins" && pwd)"

require_netns
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v busybox >/dev/null || fail "busybox not found: apt-get install busybox"

tag="dc$$"
srv="$tag-srv"
br="br$tag"
mac1="80:5e:c0:21:23:01" # reserved
mac2="02:00:00:21:23:02" # squatter
mac3="80:5e:c0:21:23:03" # udhcpc -a
mac4="80:5e:c0:21:23:04"
mac5="80:5e:c0:21:23:05"
reserved_ip=10.213.23.50
reserved_name=reception-t54w
tmp=$(mktemp -d)
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    lan_down
    rm -rf "$tmp"
}
trap cleanup EXIT

lan_up "$tag" 10.213.23.1/25 "$mac1" "$mac2" "$mac3" "$mac4" "$mac5"

mkdir -p "$tmp/data"
cat >"$tmp/provisiond.toml" <<TOML
[general]
data_dir = "$tmp/data"
base_url = "http://10.213.23.1:8667"
plugins_dir = "$plugins"
[http]
listen = "10.213.23.1:8667"
[api]
enabled = false
socket = "$tmp/api.sock"
[tftp]
enabled = false
[dhcpinfo]
socket = "$tmp/dhcpinfo.sock"
[log]
level = "info,provisiond::dhcp=debug"
[dhcp]
mode = "server"
interfaces = ["$br"]
port = 67

[[dhcp.pools]]
subnet = "10.213.23.0/25"
ranges = [{ start = "10.213.23.100", end = "10.213.23.102" }]
router = "10.213.23.1"
lease_time = 600
reservations = [{ mac = "$mac1", ip = "$reserved_ip", hostname = "$reserved_name" }]
TOML

ip netns exec "$srv" env -u RUST_LOG -u JOURNAL_STREAM -u NOTIFY_SOCKET \
    "$bin" serve --config "$tmp/provisiond.toml" 2>"$tmp/log" &
daemon=$!
pids+=("$daemon")
wait_for_line "$tmp/log" "store open; ready"
wait_for_line "$tmp/log" "DHCP server ready"

# start_dhclient N: dhclient in namespace "$tag-cN"; its hook dumps the environment to
# $tmp/v$tag-N.REASON and configures the address. dhclient_release N: DHCPRELEASE and stop.
cat >"$tmp/dhclient.conf" <<'CONF'
send vendor-class-identifier "yealink";
request subnet-mask, broadcast-address, routers, host-name, tftp-server-name;
timeout 60;
CONF
cat >"$tmp/dhclient-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(reason|interface|new_)' >"$tmp/\$interface.\$reason"
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
dhclient_args() { # N
    echo -cf "$tmp/dhclient.conf" -sf "$tmp/dhclient-hook.sh" \
        -lf "$tmp/dhclient-$1.leases" -pf "$tmp/dhclient-$1.pid" "v$tag-$1"
}
start_dhclient() { # N
    ip netns exec "$tag-c$1" dhclient -d -1 -v $(dhclient_args "$1") 2>"$tmp/dhclient-$1.log" &
    pids+=($!)
}
dhclient_release() { # N
    ip netns exec "$tag-c$1" dhclient -r $(dhclient_args "$1") >/dev/null 2>&1 || true
}
# bound_ip N: waits for the lease of client N and prints its address.
bound_ip() {
    wait_for_line "$tmp/v$tag-$1.BOUND" "^new_ip_address="
    sed -n 's/^new_ip_address=//p' "$tmp/v$tag-$1.BOUND"
}

# (a) Reservation: exactly the reserved address (outside the range) and its host name.
start_dhclient 1
ip1=$(bound_ip 1)
[ "$ip1" = "$reserved_ip" ] || fail "reserved client got $ip1, not $reserved_ip: $(cat "$tmp/v$tag-1.BOUND")"
grep -q "^new_host_name=$reserved_name\$" "$tmp/v$tag-1.BOUND" \
    || fail "no host name $reserved_name (option 12): $(cat "$tmp/v$tag-1.BOUND")"
echo "reservation: $mac1 got $ip1, host name $reserved_name"

# (b) Decline: the squatter holds .100 by hand; udhcpc is ACKed .100, sees the squatter's ARP
# reply, declines, retries after 1 s (-A 1) and binds another address.
ip -n "$tag-c2" addr add 10.213.23.100/25 dev "v$tag-2"
cat >"$tmp/udhcpc-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(interface|ip|subnet|serverid|lease)=' >"$tmp/udhcpc.\$1"
case "\$1" in
    bound|renew)
        ip addr flush dev "\$interface"
        ip addr add "\$ip/\$subnet" dev "\$interface"
        ;;
    deconfig) ip addr flush dev "\$interface" ;;
esac
exit 0
HOOK
chmod +x "$tmp/udhcpc-hook.sh"
ip netns exec "$tag-c3" busybox udhcpc -f -a500 -A 1 -t 10 -T 2 -i "v$tag-3" -V yealink \
    -s "$tmp/udhcpc-hook.sh" >"$tmp/udhcpc.log" 2>&1 &
udhcpc=$!
pids+=("$udhcpc")
wait_for_line "$tmp/udhcpc.bound" "^ip="
ip3=$(sed -n 's/^ip=//p' "$tmp/udhcpc.bound")
grep -q "in use.*declining" "$tmp/udhcpc.log" \
    || fail "udhcpc did not find the conflict on .100: $(cat "$tmp/udhcpc.log")"
grep -q "reply=Ack ip=10.213.23.100 " "$tmp/log" || fail "10.213.23.100 was never ACKed: $(cat "$tmp/log")"
grep "address declined by the client" "$tmp/log" | grep -q "10.213.23.100" \
    || fail "no DECLINE/quarantine of 10.213.23.100 in the log: $(cat "$tmp/log")"
[ "$ip3" = "10.213.23.101" ] || fail "udhcpc ended on $ip3 after declining .100, not .101: $(cat "$tmp/udhcpc.log")"
echo "decline: udhcpc declined 10.213.23.100 (squatter), then got $ip3"

# (c) The last free address, then the range is full: two releases, and a new client gets the
# one released first (least recently used), not the lowest; .100 is still quarantined.
start_dhclient 4
ip4=$(bound_ip 4)
[ "$ip4" = "10.213.23.102" ] || fail "client 4 got $ip4, not 10.213.23.102: $(cat "$tmp/v$tag-4.BOUND")"
dhclient_release 4
wait_for_line "$tmp/log" "mac=$mac4 .*request=Release"
sleep 1.2 # release times are in seconds: the two releases must differ
kill -USR2 "$udhcpc"
wait_for_line "$tmp/log" "mac=$mac3 .*request=Release"
start_dhclient 5
ip5=$(bound_ip 5)
[ "$ip5" = "10.213.23.102" ] \
    || fail "new client got $ip5, not 10.213.23.102 (released first of .101/.102): $(cat "$tmp/log")"
echo "reuse: .102 released, then .101; the new client got $ip5"

# The declined address was never offered again, to anyone.
if grep -E "reply=(Offer|Ack) ip=10.213.23.100 " "$tmp/log" | grep -qv "mac=$mac3 "; then
    fail "the declined 10.213.23.100 was handed out again: $(grep 'ip=10.213.23.100 ' "$tmp/log")"
fi
[ "$(grep -c "reply=Offer ip=10.213.23.100 " "$tmp/log")" -eq 1 ] \
    || fail "10.213.23.100 offered again after the DECLINE: $(grep 'ip=10.213.23.100 ' "$tmp/log")"
kill -0 "$daemon" 2>/dev/null || fail "provisiond died: $(tail -n 20 "$tmp/log")"
echo "ok: reservation, decline, reuse"
