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
netns_test_init

lan_up "$tag" 10.213.23.1/25 "$mac1" "$mac2" "$mac3" "$mac4" "$mac5"

provisiond_conf "$tmp" 10.213.23.1 <<TOML
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

provisiond_start "$bin" "$tmp" "$srv" "$tmp/log" "DHCP server ready"

# phone_up N: dhclient "dhclient-N" (vendor class "yealink", asking also for the host name) in
# namespace "$tag-cN" on "v$tag-N"; waits for its lease ($tmp/dhclient-N.BOUND, DHCLIENT_IP).
# phone_release N: DHCPRELEASE and stop.
phone_up() { dhclient_up "$tmp" "dhclient-$1" "$tag-c$1" "v$tag-$1" yealink host-name; }
phone_release() { dhclient_release "$tmp" "dhclient-$1" "$tag-c$1" "v$tag-$1"; }

# (a) Reservation: exactly the reserved address (outside the range) and its host name.
phone_up 1
ip1=$DHCLIENT_IP
[ "$ip1" = "$reserved_ip" ] || fail "reserved client got $ip1, not $reserved_ip: $(cat "$tmp/dhclient-1.BOUND")"
grep -q "^new_host_name=$reserved_name\$" "$tmp/dhclient-1.BOUND" \
    || fail "no host name $reserved_name (option 12): $(cat "$tmp/dhclient-1.BOUND")"
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
phone_up 4
ip4=$DHCLIENT_IP
[ "$ip4" = "10.213.23.102" ] || fail "client 4 got $ip4, not 10.213.23.102: $(cat "$tmp/dhclient-4.BOUND")"
phone_release 4
wait_for_line "$tmp/log" "mac=$mac4 .*request=Release"
sleep 1.2 # release times are in seconds: the two releases must differ
kill -USR2 "$udhcpc"
wait_for_line "$tmp/log" "mac=$mac3 .*request=Release"
phone_up 5
ip5=$DHCLIENT_IP
[ "$ip5" = "10.213.23.102" ] \
    || fail "new client got $ip5, not 10.213.23.102 (released first of .101/.102): $(cat "$tmp/log")"
echo "reuse: .102 released, then .101; the new client got $ip5"

# The declined address was never offered again, to anyone.
if grep -E "reply=(Offer|Ack) ip=10.213.23.100 " "$tmp/log" | grep -qv "mac=$mac3 "; then
    fail "the declined 10.213.23.100 was handed out again: $(grep 'ip=10.213.23.100 ' "$tmp/log")"
fi
[ "$(grep -c "reply=Offer ip=10.213.23.100 " "$tmp/log")" -eq 1 ] \
    || fail "10.213.23.100 offered again after the DECLINE: $(grep 'ip=10.213.23.100 ' "$tmp/log")"
kill -0 "$PROVISIOND_PID" 2>/dev/null || fail "provisiond died: $(tail -n 20 "$tmp/log")"
echo "ok: reservation, decline, reuse"
