# Per-vendor options in `server` mode, with real dhclients in network namespaces of their own:
#
#   [srv ns] bridge 10.213.24.1/24 ── veth ── [c1 ns] dhclient, Poly option 60 (binary)
#                                   └─ veth ── [c2 ns] dhclient, no vendor class (a laptop)
#
# The Poly phone sends the binary vendor class of Poly phones (enterprise number 13885, then
# "Polycom" and its model) and does not ask for option 160: it gets an address of the pool,
# option 160 anyway (the plugin marks it `always`) and option 66, which it asks for, both the
# provisioning URL; the device appears with its address and the Poly plugin. The laptop gets a
# plain lease of the same pool and no option 66 although it asks for it.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1

require_netns
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found: apt-get install python3"

tag="vd$$"
srv="$tag-srv"
br="br$tag"
mac1="00:04:f2:21:24:01"
mac2="02:42:ac:21:24:02"
netns_test_init

lan_up "$tag" 10.213.24.1/24 "$mac1" "$mac2"

provisiond_conf "$tmp" 10.213.24.1 <<TOML
[dhcp]
mode = "server"
interfaces = ["$br"]
port = 67

[[dhcp.pools]]
subnet = "10.213.24.0/24"
ranges = [{ start = "10.213.24.100", end = "10.213.24.150" }]
router = "10.213.24.1"
lease_time = 600
TOML
provisiond_start "$bin" "$tmp" "$srv" "$tmp/log" "DHCP server ready"

# 00:00:36:3d = 13885, then 18 bytes: sub-option 1 "Polycom", sub-option 2 the model "VVX_411".
poly="hex:00:00:36:3d:12:01:07:50:6f:6c:79:63:6f:6d:02:07:56:56:58:5f:34:31:31"
dhclient_start "$tmp" poly "$tag-c1" "v$tag-1" "$poly" boot160=160:text
dhclient_start "$tmp" laptop "$tag-c2" "v$tag-2" ""
dhclient_wait "$tmp" poly
poly_ip=$DHCLIENT_IP
poly_66=$DHCLIENT_OPT66
poly_160=$(sed -n 's/^new_boot160=//p' "$tmp/poly.BOUND")
dhclient_wait "$tmp" laptop
laptop_ip=$DHCLIENT_IP
laptop_66=$DHCLIENT_OPT66

in_pool() {
    case "$1" in
        10.213.24.1[0-4][0-9] | 10.213.24.150) return 0 ;;
        *) return 1 ;;
    esac
}
url="http://10.213.24.1:8667/"
in_pool "$poly_ip" || fail "the Poly phone got '$poly_ip': $(cat "$tmp/poly.BOUND")"
[ "$poly_160" = "$url" ] || fail "the Poly phone's option 160 (not asked for): '$poly_160' ($(cat "$tmp/poly.BOUND"))"
[ "$poly_66" = "$url" ] || fail "the Poly phone's option 66: '$poly_66' ($(cat "$tmp/poly.BOUND"))"
echo "Poly phone: $poly_ip, option 160 $poly_160 unasked, option 66 $poly_66"
in_pool "$laptop_ip" || fail "the laptop got '$laptop_ip': $(cat "$tmp/laptop.BOUND")"
[ "$laptop_ip" != "$poly_ip" ] || fail "both clients got $poly_ip"
[ -z "$laptop_66" ] || fail "the laptop got option 66 '$laptop_66': only phones get provisioning options"
echo "laptop: $laptop_ip, no option 66"

# The phone is known with its address and the Poly plugin before any request of its own.
i=0
until curl -sf --unix-socket "$tmp/api.sock" http://localhost/0.2/dev_mgr/devices >"$tmp/devices.json" \
    && python3 - "$tmp/devices.json" "$mac1" "$poly_ip" <<'PY'; do
import json, sys
path, mac, ip = sys.argv[1:]
devices = json.load(open(path))["devices"]
sys.exit(0 if any(d.get("mac") == mac and d.get("ip") == ip and d.get("plugin") == "polycom"
                  for d in devices) else 1)
PY
    i=$((i + 1))
    [ "$i" -lt 200 ] || fail "no device $mac1 with ip $poly_ip and plugin polycom: $(cat "$tmp/devices.json" 2>/dev/null)"
    sleep 0.1
done
kill -0 "$PROVISIOND_PID" 2>/dev/null || fail "provisiond died: $(tail -n 20 "$tmp/log")"
echo "ok: vendors"
