# ISC dhcpd (isc-dhcp-server) feeds provisiond through its lease hooks, in network namespaces
# of their own:
#
#   [srv ns] bridge 10.213.30.1/24: provisiond serve (DHCP off, HTTP 10.213.30.1:8667)
#            + dhcpd on the bridge, etc/examples/isc-dhcp-server.conf with the addresses
#              changed and `--socket` added to its execute("…provisiond", "dhcp-notify", …),
#              including the classes `provisiond dhcp-snippet --format isc` printed
#      └─ veth ── [c1 ns] dhclient, vendor class "yealink"
#
# The phone gets a lease and option 66 from the snippet's Yealink class; dhcpd's `on commit`
# runs dhcp-notify and the admin API shows the device with its MAC, the leased IP and vendor
# Yealink before the phone made any request to provisiond; the phone then fetches its MAC
# file over HTTP; `dhclient -r` makes dhcpd run `on release`, which clears the device's IP.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
here="$(cd "$(dirname "$0")" && pwd)"

require_netns
command -v dhcpd >/dev/null || [ -x /usr/sbin/dhcpd ] || fail "dhcpd not found: apt-get install isc-dhcp-server"
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found: apt-get install python3"
dhcpd=$(command -v dhcpd || echo /usr/sbin/dhcpd)

tag="di$$"
srv="$tag-srv"
c1="$tag-c1"
br="br$tag"
mac="80:5e:c0:30:00:01"
netns_test_init provisiond.log dhcpd.log dhclient.log # printed on failure

lan_up "$tag" 10.213.30.1/24 "$mac"
dhcpinfo_serve "$bin" "$tmp" "$srv" 10.213.30.1

# The shipped example, with this LAN's addresses, the test daemon's socket and the classes
# that dhcp-snippet writes from the test daemon's configuration (base_url and plugins).
"$bin" dhcp-snippet --config "$tmp/provisiond.toml" --format isc >"$tmp/provisiond-classes.conf" \
    2>"$tmp/snippet.err" || fail "dhcp-snippet failed: $(cat "$tmp/snippet.err")"
grep -q 'class "provisiond-yealink"' "$tmp/provisiond-classes.conf" \
    || fail "dhcp-snippet wrote no Yealink class: $(cat "$tmp/provisiond-classes.conf")"
sed -e 's|http://192\.0\.2\.10:8667/|http://10.213.30.1:8667/|g' -e 's/192\.0\.2\./10.213.30./g' \
    -e "s|^include \"/etc/dhcp/provisiond-classes.conf\";|include \"$tmp/provisiond-classes.conf\";|" \
    -e "s|\"/usr/bin/provisiond\", \"dhcp-notify\",|\"$bin\", \"dhcp-notify\", \"--socket\", \"$tmp/dhcpinfo.sock\",|" \
    "$here/../etc/examples/isc-dhcp-server.conf" >"$tmp/dhcpd.conf"
[ "$(grep -c -- '"--socket"' "$tmp/dhcpd.conf")" -eq 3 ] \
    || fail "etc/examples/isc-dhcp-server.conf: expected 3 execute(\"/usr/bin/provisiond\", \"dhcp-notify\", …) hooks"
grep -qF "include \"$tmp/provisiond-classes.conf\";" "$tmp/dhcpd.conf" \
    || fail "etc/examples/isc-dhcp-server.conf: no include \"/etc/dhcp/provisiond-classes.conf\";"
touch "$tmp/dhcpd.leases"
ip netns exec "$srv" "$dhcpd" -t -4 -cf "$tmp/dhcpd.conf" >"$tmp/dhcpd-t.log" 2>&1 \
    || fail "dhcpd rejects the example: $(cat "$tmp/dhcpd-t.log")"
ip netns exec "$srv" "$dhcpd" -f -d -4 -cf "$tmp/dhcpd.conf" -lf "$tmp/dhcpd.leases" \
    -pf "$tmp/dhcpd.pid" "$br" >"$tmp/dhcpd.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/dhcpd.log" "^Listening on LPF/$br/"

# The phone's lease, with option 66 from the snippet's "provisiond-yealink" class.
dhclient_up "$tmp" dhclient "$c1" "v$tag-1" yealink
ip=$DHCLIENT_IP
case "$ip" in
    10.213.30.1[0-9][0-9]) ;;
    *) fail "dhclient got '$ip', not an address of the example's range" ;;
esac
[ "$DHCLIENT_OPT66" = "http://10.213.30.1:8667/" ] || fail "option 66: '$DHCLIENT_OPT66'"
echo "dhclient: $ip, option 66 $DHCLIENT_OPT66"

# dhcpd's `on commit` ran dhcp-notify: MAC, IP and vendor (from option 60) are known before
# the phone asks provisiond for anything.
dhcpinfo_device "$tmp" "$mac" "$ip" Yealink
grep -q "DHCPACK on $ip to $mac" "$tmp/dhcpd.log" || fail "no DHCPACK in dhcpd's log"
[ "$(dhcpinfo_counter "$tmp" malformed)" = 0 ] || fail "dhcpd's hook sent a malformed event"
! grep -q "provisiond dhcp-notify:" "$tmp/dhcpd.log" || fail "dhcp-notify complained: $(grep "provisiond dhcp-notify:" "$tmp/dhcpd.log")"
echo "commit: device $mac ip $ip vendor Yealink"

dhcpinfo_fetch "$tmp" "$c1" "$mac" "$DHCLIENT_OPT66"
echo "the phone fetched its MAC file from the URL of option 66"

# The release: dhcpd runs `on release`, provisiond clears the IP.
dhclient_release "$tmp" dhclient "$c1" "v$tag-1"
wait_for_line "$tmp/dhcpd.log" "DHCPRELEASE of $ip from $mac"
dhcpinfo_device "$tmp" "$mac" "" Yealink
[ "$(dhcpinfo_counter "$tmp" accepted)" -ge 2 ] || fail "fewer than 2 accepted events"
echo "release: device $mac has no IP any more"
