# dnsmasq (dnsmasq-base) feeds provisiond through its dhcp-script, in network namespaces of
# their own:
#
#   [srv ns] bridge 10.213.32.1/24: provisiond serve (DHCP off, HTTP 10.213.32.1:8667)
#            + dnsmasq on the bridge (no DNS), etc/examples/dnsmasq.conf with this LAN's
#              addresses and dhcp-script= naming the provisiond under test itself (no
#              wrapper), PROVISIOND_CONFIG in dnsmasq's environment naming the test's config
#      └─ veth ── [c1 ns] dhclient, vendor class "yealink"
#
# The phone gets a lease and option 66 from dhcp-snippet's Yealink tag; dnsmasq runs
# `provisiond add MAC IP` with DNSMASQ_VENDOR_CLASS, and the admin API shows the device with
# its MAC, the leased IP and vendor Yealink before the phone made any request to provisiond;
# the phone then fetches its MAC file over HTTP; `dhclient -r` makes dnsmasq run
# `provisiond del MAC IP`, which clears the device's IP.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
here="$(cd "$(dirname "$0")" && pwd)"

require_netns
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || fail "dnsmasq not found: apt-get install dnsmasq-base"
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found: apt-get install python3"
dnsmasq=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)

tag="dm$$"
srv="$tag-srv"
c1="$tag-c1"
br="br$tag"
mac="80:5e:c0:32:00:01"
netns_test_init provisiond.log dnsmasq.log dhclient.log # printed on failure

lan_up "$tag" 10.213.32.1/24 "$mac"
dhcpinfo_serve "$bin" "$tmp" "$srv" 10.213.32.1

# The shipped example, with this LAN's addresses, the binary under test as the script and the
# tags that dhcp-snippet writes from the test daemon's configuration (base_url and plugins).
"$bin" dhcp-snippet --config "$tmp/provisiond.toml" --format dnsmasq >"$tmp/dnsmasq-classes.conf" \
    2>"$tmp/snippet.err" || fail "dhcp-snippet failed: $(cat "$tmp/snippet.err")"
grep -q '^dhcp-vendorclass=set:provisiond-yealink,yealink$' "$tmp/dnsmasq-classes.conf" \
    || fail "dhcp-snippet wrote no Yealink tag: $(cat "$tmp/dnsmasq-classes.conf")"
sed -e 's|http://192\.0\.2\.10:8667/|http://10.213.32.1:8667/|g' -e 's/192\.0\.2\./10.213.32./g' \
    -e "s|^dhcp-script=/usr/bin/provisiond\$|dhcp-script=$bin|" \
    -e "s|^conf-file=/etc/provisiond/dnsmasq-classes.conf\$|conf-file=$tmp/dnsmasq-classes.conf|" \
    "$here/../etc/examples/dnsmasq.conf" >"$tmp/dnsmasq.conf"
grep -qx "conf-file=$tmp/dnsmasq-classes.conf" "$tmp/dnsmasq.conf" \
    || fail "etc/examples/dnsmasq.conf: no line conf-file=/etc/provisiond/dnsmasq-classes.conf"
grep -qx "dhcp-script=$bin" "$tmp/dnsmasq.conf" \
    || fail "etc/examples/dnsmasq.conf: no line dhcp-script=/usr/bin/provisiond"
# -d: foreground, log to stderr, no pid file, no change of user (dnsmasq and its script run
# as root, as the script would without -d: no dhcp-scriptuser in the example). port=0: no DNS.
dnsmasq_args=(-d --conf-file="$tmp/dnsmasq.conf" --port=0 --interface="$br" --bind-interfaces
    --dhcp-leasefile="$tmp/dnsmasq.leases" --log-dhcp)
ip netns exec "$srv" "$dnsmasq" --test "${dnsmasq_args[@]}" >"$tmp/dnsmasq-t.log" 2>&1 \
    || fail "dnsmasq rejects the example: $(cat "$tmp/dnsmasq-t.log")"
ip netns exec "$srv" env PROVISIOND_CONFIG="$tmp/provisiond.toml" \
    "$dnsmasq" "${dnsmasq_args[@]}" >"$tmp/dnsmasq.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/dnsmasq.log" "DHCP, IP range 10.213.32.100 -- 10.213.32.199"

# The phone's lease, with option 66 from the snippet's "provisiond-yealink" tag.
dhclient_up "$tmp" dhclient "$c1" "v$tag-1" yealink
ip=$DHCLIENT_IP
case "$ip" in
    10.213.32.1[0-9][0-9]) ;;
    *) fail "dhclient got '$ip', not an address of the example's range" ;;
esac
[ "$DHCLIENT_OPT66" = "http://10.213.32.1:8667/" ] || fail "option 66: '$DHCLIENT_OPT66'"
echo "dhclient: $ip, option 66 $DHCLIENT_OPT66"

# dnsmasq ran `provisiond add MAC IP` with DNSMASQ_VENDOR_CLASS: MAC, IP and vendor are known
# before the phone asks provisiond for anything.
dhcpinfo_device "$tmp" "$mac" "$ip" Yealink
grep -q "DHCPACK($br) $ip $mac" "$tmp/dnsmasq.log" || fail "no DHCPACK in dnsmasq's log"
[ "$(dhcpinfo_counter "$tmp" malformed)" = 0 ] || fail "dnsmasq's script sent a malformed event"
! grep -q "provisiond dhcp-notify:" "$tmp/dnsmasq.log" || fail "dhcp-notify complained: $(grep "provisiond dhcp-notify:" "$tmp/dnsmasq.log")"
echo "add: device $mac ip $ip vendor Yealink"

dhcpinfo_fetch "$tmp" "$c1" "$mac" "$DHCLIENT_OPT66"
echo "the phone fetched its MAC file from the URL of option 66"

# The release: dnsmasq runs `provisiond del MAC IP`, provisiond clears the IP.
dhclient_release "$tmp" dhclient "$c1" "v$tag-1"
wait_for_line "$tmp/dnsmasq.log" "DHCPRELEASE($br) $ip $mac"
dhcpinfo_device "$tmp" "$mac" "" Yealink
! grep -q "provisiond dhcp-notify:" "$tmp/dnsmasq.log" || fail "dhcp-notify complained: $(grep "provisiond dhcp-notify:" "$tmp/dnsmasq.log")"
[ "$(dhcpinfo_counter "$tmp" accepted)" -ge 2 ] || fail "fewer than 2 accepted events"
echo "release: device $mac has no IP any more"
