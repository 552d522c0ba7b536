# provisiond's DHCP server behind a DHCP relay (ISC dhcrelay), in network namespaces of its own:
#
#   [c ns] dhclient ── veth ── [rel ns] dhcrelay, ip_forward ── veth ── [srv ns] provisiond
#          (yealink)  LAN A: 10.213.21.0/24       LAN B: 10.213.22.0/24
#                     client: from the pool       relay .1, provisiond .2
#                     relay: .1 (giaddr)          route to LAN A via the relay
#
# provisiond has two pools, one per LAN. It receives the client's messages from the relay on
# LAN B, so the pool must be chosen by giaddr (10.213.21.1): the client gets an address of
# 10.213.21.100-150, the router 10.213.21.1 and option 66 = the provisioning URL, and the
# replies go to the relay (giaddr:67). The client then fetches its MAC file over HTTP from
# provisiond across the relay, and appears on the admin socket with that address. At T1 it
# renews by unicast to provisiond through the router: the ACK is routed back by UDP.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1

require_netns
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v dhcrelay >/dev/null || fail "dhcrelay not found: apt-get install isc-dhcp-relay"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found"

tag="rl$$"
cns="$tag-c"    # the phone
rns="$tag-rel"  # the relay (a router with dhcrelay)
sns="$tag-srv"  # provisiond
if_c="vc$tag"   # phone's interface, LAN A
if_ra="ra$tag"  # relay's interface on LAN A: 10.213.21.1
if_rb="rb$tag"  # relay's interface on LAN B: 10.213.22.1
if_s="vs$tag"   # provisiond's interface, LAN B: 10.213.22.2
server=10.213.22.2
mac="80:5e:c0:21:21:01"
netns_test_init

# The three namespaces (lan_down deletes what LAN_NAMESPACES lists) and the two veth cables.
LAN_NAMESPACES=("$cns" "$rns" "$sns")
for ns in "${LAN_NAMESPACES[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip link add "$if_c" netns "$cns" address "$mac" type veth peer name "$if_ra" netns "$rns"
ip link add "$if_rb" netns "$rns" type veth peer name "$if_s" netns "$sns"
ip -n "$cns" link set "$if_c" up
ip -n "$rns" addr add 10.213.21.1/24 dev "$if_ra"
ip -n "$rns" addr add 10.213.22.1/24 dev "$if_rb"
ip -n "$rns" link set "$if_ra" up
ip -n "$rns" link set "$if_rb" up
ip netns exec "$rns" sysctl -qw net.ipv4.ip_forward=1
ip -n "$sns" addr add "$server/24" dev "$if_s"
ip -n "$sns" link set "$if_s" up
ip -n "$sns" route add 10.213.21.0/24 via 10.213.22.1

provisiond_conf "$tmp" "$server" <<TOML
[dhcp]
mode = "server"
interfaces = ["$if_s"]
port = 67

# LAN A, behind the relay.
[[dhcp.pools]]
subnet = "10.213.21.0/24"
ranges = [{ start = "10.213.21.100", end = "10.213.21.150" }]
router = "10.213.21.1"
domain = "lan-a.test"
lease_time = 600
renew_time = 6

# LAN B, provisiond's own link: the receiving interface is here, the client is not.
[[dhcp.pools]]
subnet = "10.213.22.0/24"
ranges = [{ start = "10.213.22.100", end = "10.213.22.150" }]
router = "10.213.22.1"
domain = "lan-b.test"
lease_time = 600
TOML

provisiond_start "$bin" "$tmp" "$sns" "$tmp/log" "DHCP server ready"

# The relay: listens to clients on LAN A (giaddr = its address there), forwards to provisiond.
ip netns exec "$rns" dhcrelay -d -4 -pf "$tmp/dhcrelay.pid" -id "$if_ra" -iu "$if_rb" "$server" \
    >"$tmp/relay.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/relay.log" "^Sending on"

# dhclient: its hook dumps the new_* variables to $tmp/dhclient.REASON, configures the address
# and the default route (via the router of the lease: the relay).
dhclient_start "$tmp" dhclient "$cns" "$if_c" yealink domain-name

bound() { grep -q '^new_ip_address=' "$tmp/dhclient.BOUND" 2>/dev/null; }
for i in $(seq 1 600); do
    bound && break
    sleep 0.1
done
bound || fail "no lease through the relay within 60 s:
--- provisiond: $(cat "$tmp/log")
--- dhcrelay: $(cat "$tmp/relay.log")
--- dhclient: $(cat "$tmp/dhclient.log")"
ip=$(sed -n 's/^new_ip_address=//p' "$tmp/dhclient.BOUND")
url=$(sed -n 's/^new_tftp_server_name=//p' "$tmp/dhclient.BOUND")
case "$ip" in
    10.213.21.1[0-4][0-9] | 10.213.21.150) ;;
    *) fail "the relayed client got '$ip', not an address of the 10.213.21.0/24 pool (giaddr): $(cat "$tmp/dhclient.BOUND")" ;;
esac
grep -q '^new_routers=10.213.21.1$' "$tmp/dhclient.BOUND" \
    || fail "router of the wrong pool: $(cat "$tmp/dhclient.BOUND")"
grep -q '^new_domain_name=lan-a.test$' "$tmp/dhclient.BOUND" \
    || fail "domain of the wrong pool: $(cat "$tmp/dhclient.BOUND")"
grep -q "^new_dhcp_server_identifier=$server\$" "$tmp/dhclient.BOUND" \
    || fail "server identifier is not $server: $(cat "$tmp/dhclient.BOUND")"
[ "$url" = "http://$server:8667/" ] || fail "option 66: '$url' ($(cat "$tmp/dhclient.BOUND"))"
# The OFFER and the ACK went back to the relay (giaddr, server port), not to the client.
grep -q "request=Discover reply=Offer ip=$ip dst=10.213.21.1:67" "$tmp/log" \
    || fail "no OFFER of $ip to the relay: $(cat "$tmp/log")"
grep -q "request=Request reply=Ack ip=$ip dst=10.213.21.1:67" "$tmp/log" \
    || fail "no ACK of $ip to the relay: $(cat "$tmp/log")"
echo "relayed dhclient: $ip, router 10.213.21.1, option 66 $url"

# The phone fetches its MAC file across the relay (its default route is the relay).
ip netns exec "$cns" curl -sf --max-time 10 -o "$tmp/phone.cfg" "${url}${mac//:/}.cfg" \
    || fail "the phone could not fetch ${mac//:/}.cfg across the relay: $(tail -n 20 "$tmp/log")"
[ -s "$tmp/phone.cfg" ] || fail "${mac//:/}.cfg is empty"
echo "the phone fetched its MAC file across the relay"

# The device is known with its LAN A address and vendor (identification after the ACK).
device_ok() {
    curl -sf --unix-socket "$tmp/api.sock" http://localhost/0.2/dev_mgr/devices >"$tmp/devices.json" \
        || return 1
    python3 - "$tmp/devices.json" "$mac" "$ip" <<'PY'
import json, sys
path, mac, ip = sys.argv[1:]
devices = json.load(open(path))["devices"]
sys.exit(0 if any(d.get("mac") == mac and d.get("ip") == ip and d.get("vendor") == "Yealink"
                  for d in devices) else 1)
PY
}
i=0
until device_ok; do
    i=$((i + 1))
    [ "$i" -lt 200 ] || fail "no device $mac with ip $ip and vendor Yealink: $(cat "$tmp/devices.json" 2>/dev/null)"
    sleep 0.1
done

# At T1 (6 s) dhclient renews by unicast straight to provisiond, through the router and not
# the relay: the ACK must be routed back by UDP (the client is not on provisiond's link).
for i in $(seq 1 300); do
    [ -e "$tmp/dhclient.RENEW" ] && break
    sleep 0.1
done
[ -e "$tmp/dhclient.RENEW" ] || fail "no renewal through the router within 30 s:
--- provisiond: $(tail -n 20 "$tmp/log")
--- dhclient: $(tail -n 20 "$tmp/dhclient.log")"
grep -q "^new_ip_address=$ip\$" "$tmp/dhclient.RENEW" \
    || fail "the renewal changed the address: $(cat "$tmp/dhclient.RENEW")"
grep -q "request=Request reply=Ack ip=$ip dst=$ip:68 link=false" "$tmp/log" \
    || fail "the renewal's ACK was not sent by UDP to $ip: $(grep "reply=" "$tmp/log" | tail -n 5)"
echo "unicast renewal from behind the router: $ip kept"

kill -0 "$PROVISIOND_PID" 2>/dev/null || fail "provisiond died: $(tail -n 20 "$tmp/log")"
echo "ok: relay"
