# `[dhcp] mode = "phones-only"` with real clients in network namespaces of their own:
#
#   [srv ns] bridge 10.213.1.1/24 ── veth ── [c1 ns] dhclient, no vendor class (a laptop)
#                                  └─ veth ── [c2 ns] udhcpc -V yealink     (a phone)
#
# The phone gets a lease; the laptop's DISCOVERs are read and left unanswered (the log says
# why), so that another DHCP server on the segment serves it. Namespaces deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1

require_netns
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v busybox >/dev/null || fail "busybox not found: apt-get install busybox"

tag="po$$"
srv="$tag-srv"
c1="$tag-c1"
c2="$tag-c2"
br="br$tag"
mac1="02:42:ac:00:00:01"
mac2="80:5e:c0:21:31:02"
netns_test_init

lan_up "$tag" 10.213.1.1/24 "$mac1" "$mac2"

provisiond_conf "$tmp" 10.213.1.1 <<TOML
[dhcp]
mode = "phones-only"
port = 67

[[dhcp.pools]]
subnet = "10.213.1.0/24"
ranges = [{ start = "10.213.1.100", end = "10.213.1.150" }]
router = "10.213.1.1"
TOML

provisiond_start "$bin" "$tmp" "$srv" "$tmp/log" "DHCP server ready"

# The laptop: dhclient without a vendor class.
dhclient_start "$tmp" dhclient "$c1" "v$tag-1" ""

cat >"$tmp/udhcpc-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(interface|ip|subnet|router|tftp|serverid|lease)=' >"$tmp/udhcpc.\$1"
exit 0
HOOK
chmod +x "$tmp/udhcpc-hook.sh"

# The laptop's DISCOVER is read and left unanswered.
wait_for_line "$tmp/log" "no reply: phones-only: not identified as a phone mac=$mac1"
# The phone, on the same segment, is answered.
ip netns exec "$c2" busybox udhcpc -f -q -n -t 10 -T 2 -i "v$tag-2" -V yealink -O tftp \
    -s "$tmp/udhcpc-hook.sh" >"$tmp/udhcpc.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/udhcpc.bound" "^ip=10.213.1.1[0-5][0-9]$"
grep -q "mac=$mac2 .*request=Request reply=Ack" "$tmp/log" || fail "no ACK for the phone: $(cat "$tmp/log")"
# The laptop was never offered anything (it keeps retransmitting meanwhile).
if grep -q "mac=$mac1 .*reply=" "$tmp/log"; then
    fail "the laptop was answered: $(grep "mac=$mac1" "$tmp/log")"
fi
[ ! -e "$tmp/dhclient.BOUND" ] || fail "the laptop got a lease: $(cat "$tmp/dhclient.BOUND")"
echo "phone: $(sed -n 's/^ip=//p' "$tmp/udhcpc.bound"); laptop: no answer"
