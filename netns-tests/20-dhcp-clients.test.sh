# Real DHCP clients against provisiond's DHCP server, in network namespaces of their own:
#
#   [srv ns] bridge 10.213.0.1/24 ── veth ── [c1 ns] dhclient  (vendor class "yealink")
#                                  └─ veth ── [c2 ns] udhcpc    (-V yealink)
#
# provisiond runs `serve` in the server namespace (DHCP on port 67 bound to the bridge, one
# pool, HTTP on 10.213.0.1:8667). Each client must get an address of the pool and option 66 =
# the provisioning URL; the device must appear on the admin socket with that address and
# vendor Yealink; the client then fetches its MAC file over HTTP across the veth.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1

require_netns
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v busybox >/dev/null || fail "busybox not found: apt-get install busybox"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found"

tag="pd$$"
srv="$tag-srv"
c1="$tag-c1"
c2="$tag-c2"
br="br$tag"
mac1="80:5e:c0:21:30:01"
mac2="80:5e:c0:21:30:02"
netns_test_init

lan_up "$tag" 10.213.0.1/24 "$mac1" "$mac2"

provisiond_conf "$tmp" 10.213.0.1 <<TOML
[dhcp]
mode = "server"
interfaces = ["$br"]
port = 67

[[dhcp.pools]]
subnet = "10.213.0.0/24"
ranges = [{ start = "10.213.0.100", end = "10.213.0.150" }]
router = "10.213.0.1"
dns = ["10.213.0.1"]
domain = "voice.test"
lease_time = 600
renew_time = 8
rebind_time = 500
TOML

provisiond_start "$bin" "$tmp" "$srv" "$tmp/log" "DHCP server ready"

# dhclient: its hook dumps the new_* variables to $tmp/dhclient.REASON and configures the address.
dhclient_start "$tmp" dhclient "$c1" "v$tag-1" yealink domain-name domain-name-servers

# udhcpc: the same, from busybox.
cat >"$tmp/udhcpc-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(interface|ip|subnet|router|domain|tftp|opt|serverid|lease)=' >"$tmp/udhcpc.\$1"
case "\$1" in
    bound|renew)
        ip addr flush dev "\$interface"
        ip addr add "\$ip/\$subnet" dev "\$interface"
        ;;
esac
exit 0
HOOK
chmod +x "$tmp/udhcpc-hook.sh"
# busybox exports option 66 only when it looks like a host name (a URL becomes "bad"): a
# packet socket in the client's namespace reads the ACK's option 66 as sent.
cat >"$tmp/sniff.py" <<'PY'
import socket, struct, sys
iface, out, ready = sys.argv[1:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind((iface, 0))
s.settimeout(60)
open(ready, "w").write("ready\n")
while True:
    frame = s.recv(4096)
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if len(ip) < ihl + 8 or ip[9] != 17:
        continue
    udp = ip[ihl:]
    if struct.unpack("!H", udp[2:4])[0] != 68:
        continue
    dhcp = udp[8:]
    if len(dhcp) < 240 or dhcp[0] != 2:
        continue
    opts, i = {}, 240
    while i < len(dhcp) and dhcp[i] != 255:
        if dhcp[i] == 0:
            i += 1
            continue
        code, length = dhcp[i], dhcp[i + 1]
        opts[code] = opts.get(code, b"") + dhcp[i + 2:i + 2 + length]
        i += 2 + length
    if opts.get(53) == b"\x05":
        dst_mac = ":".join("%02x" % b for b in frame[:6])
        open(out, "w").write("option66=%s\ndst_mac=%s\n" % (opts.get(66, b"").decode(), dst_mac))
        break
PY
ip netns exec "$c2" python3 "$tmp/sniff.py" "v$tag-2" "$tmp/sniffed" "$tmp/sniff.ready" \
    >"$tmp/sniff.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/sniff.ready" ready
ip netns exec "$c2" busybox udhcpc -f -q -n -t 10 -T 2 -i "v$tag-2" -V yealink -O tftp \
    -s "$tmp/udhcpc-hook.sh" >"$tmp/udhcpc.log" 2>&1 &
pids+=($!)

dhclient_wait "$tmp" dhclient
wait_for_line "$tmp/udhcpc.bound" "^ip="
ip1=$DHCLIENT_IP
ip2=$(sed -n 's/^ip=//p' "$tmp/udhcpc.bound")
url1=$DHCLIENT_OPT66
grep -q '^tftp=' "$tmp/udhcpc.bound" || fail "udhcpc: no option 66 ($(cat "$tmp/udhcpc.bound"))"
wait_for_line "$tmp/sniffed" "^option66="
url2=$(sed -n 's/^option66=//p' "$tmp/sniffed")

in_pool() {
    case "$1" in
        10.213.0.1[0-4][0-9] | 10.213.0.150) return 0 ;;
        *) return 1 ;;
    esac
}
in_pool "$ip1" || fail "dhclient got $ip1, not an address of the pool: $(cat "$tmp/dhclient.BOUND")"
in_pool "$ip2" || fail "udhcpc got $ip2, not an address of the pool: $(cat "$tmp/udhcpc.bound")"
[ "$ip1" != "$ip2" ] || fail "both clients got $ip1"
[ "$url1" = "http://10.213.0.1:8667/" ] || fail "dhclient option 66: '$url1' ($(cat "$tmp/dhclient.BOUND"))"
[ "$url2" = "http://10.213.0.1:8667/" ] || fail "udhcpc option 66: '$url2' ($(cat "$tmp/udhcpc.bound"))"
# RFC 2131 §4.1: udhcpc asked for no broadcast, so its ACK is a frame to its own MAC.
grep -q "^dst_mac=$mac2\$" "$tmp/sniffed" || fail "udhcpc's ACK was not unicast to $mac2: $(cat "$tmp/sniffed")"
grep -q '^new_routers=10.213.0.1$' "$tmp/dhclient.BOUND" || fail "dhclient: no router"
grep -q '^new_domain_name=voice.test$' "$tmp/dhclient.BOUND" || fail "dhclient: no domain"
echo "dhclient: $ip1 option 66 $url1; udhcpc: $ip2 option 66 $url2"

# The devices are on the admin socket with their address and vendor as soon as the clients
# are bound: identification of a lease runs before its ACK leaves, so no waiting here.
device_ok() { # MAC IP
    curl -sf --unix-socket "$tmp/api.sock" http://localhost/0.2/dev_mgr/devices >"$tmp/devices.json" \
        || return 1
    python3 - "$tmp/devices.json" "$1" "$2" <<'PY'
import json, sys
path, mac, ip = sys.argv[1:]
devices = json.load(open(path))["devices"]
ok = any(d.get("mac") == mac and d.get("ip") == ip and d.get("vendor") == "Yealink" for d in devices)
sys.exit(0 if ok else 1)
PY
}
for pair in "$mac1 $ip1" "$mac2 $ip2"; do
    set -- $pair
    device_ok "$1" "$2" || fail "bound, but no device $1 with ip $2 and vendor Yealink: $(cat "$tmp/devices.json" 2>/dev/null)"
done

# The leases are in the store (written before the ACK): the log says ACK for both.
grep -q "reply=Ack" "$tmp/log" || fail "no DHCPACK in the log: $(cat "$tmp/log")"

# Each phone fetches its own MAC file over HTTP across the veth, from the address it got.
for pair in "$c1 ${mac1//:/}" "$c2 ${mac2//:/}"; do
    set -- $pair
    ip netns exec "$1" curl -sf --max-time 10 -o "$tmp/$2.cfg" "http://10.213.0.1:8667/$2.cfg" \
        || fail "$1 could not fetch $2.cfg: $(tail -n 20 "$tmp/log")"
    [ -s "$tmp/$2.cfg" ] || fail "$2.cfg is empty"
done
echo "both phones fetched their MAC file"

# The daemon restarts before dhclient renews (T1 = 8 s): the renewal is acknowledged with the
# same address, unicast to the client.
kill -TERM "$PROVISIOND_PID"
wait "$PROVISIOND_PID" || fail "provisiond exited with $?: $(tail -n 20 "$tmp/log")"
grep -q "stopped cleanly" "$tmp/log" || fail "no clean stop"
provisiond_start "$bin" "$tmp" "$srv" "$tmp/log2" "DHCP server ready"
grep -q "leases=2" "$tmp/log2" || fail "the leases were not kept: $(grep 'DHCP server ready' "$tmp/log2")"
for i in $(seq 1 600); do
    [ -e "$tmp/dhclient.RENEW" ] && break
    sleep 0.1
done
[ -e "$tmp/dhclient.RENEW" ] || fail "dhclient did not renew within 60 s: $(cat "$tmp/log2") $(cat "$tmp/dhclient.log")"
grep -q "^new_ip_address=$ip1\$" "$tmp/dhclient.RENEW" || fail "renewal changed the address: $(cat "$tmp/dhclient.RENEW")"
grep -q "request=Request reply=Ack ip=$ip1 dst=$ip1:68" "$tmp/log2" \
    || fail "no unicast ACK of the renewal: $(cat "$tmp/log2")"
echo "renewal after a restart: $ip1 kept"

# dhclient releases its lease (-r): the store marks it released.
dhclient_release "$tmp" dhclient "$c1" "v$tag-1"
wait_for_line "$tmp/log2" "request=Release"
