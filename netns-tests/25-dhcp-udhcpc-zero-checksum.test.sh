# A DHCPACK whose UDP checksum computes to 0 reaches busybox udhcpc (issue 12), in network
# namespaces of their own:
#
#   [srv ns] bridge 10.213.25.1/24 ── veth ── [c1 ns] busybox udhcpc, MAC of a reservation
#
# busybox 1.35 recomputes the UDP checksum of every reply it reads from its packet socket and
# drops one whose field differs from its result; for a computed 0 its result is 0x0000, so a
# reply sent with RFC 768's 0xffff never gets through, nor do its byte-identical
# retransmissions ("no lease, failing"). provisiond sends 0x0000 ("no checksum") instead.
#
# To hit that 1-in-65,536 case on purpose, udhcpc runs with LD_PRELOAD of a small library (built
# here with cc) whose rand() returns $ZC_XID: busybox's transaction id is one rand(). The client
# has a reservation, so the ACK is the same bytes apart from the xid in every run:
#   run 1: xid 0; a packet socket in the client's namespace reads the ACK and computes its UDP
#          checksum C; udhcpc releases the lease on SIGTERM (-R), so run 2 gets a fresh one.
#   run 2: the xid whose bytes on the wire are C (big-endian), then 0 0: the xid words add the
#          complement of the rest of the sum, so the ones' complement sum is 0xffff and the
#          checksum computes to 0. The ACK must carry 0x0000 and udhcpc must get its lease.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1

require_netns
command -v busybox >/dev/null || fail "busybox not found: apt-get install busybox"
command -v python3 >/dev/null || fail "python3 not found: apt-get install python3"
command -v cc >/dev/null || fail "cc not found: apt-get install gcc libc6-dev"
# LD_PRELOAD reaches only a dynamically linked busybox (Debian's "busybox"; not busybox-static).
ldd "$(command -v busybox)" 2>/dev/null | grep -q 'libc\.so' \
    || fail "busybox is not dynamically linked: apt-get install busybox (not busybox-static)"

tag="zc$$"
srv="$tag-srv"
c1="$tag-c1"
br="br$tag"
iface="v$tag-1"
mac="80:5e:c0:21:25:01"
reserved_ip=10.213.25.50
lease_time=600
netns_test_init log udhcpc-1.log udhcpc-2.log sniff-1.log sniff-2.log

lan_up "$tag" 10.213.25.1/24 "$mac"

provisiond_conf "$tmp" 10.213.25.1 <<TOML
[dhcp]
mode = "server"
interfaces = ["$br"]
port = 67

[[dhcp.pools]]
subnet = "10.213.25.0/24"
ranges = [{ start = "10.213.25.100", end = "10.213.25.110" }]
router = "10.213.25.1"
lease_time = $lease_time
reservations = [{ mac = "$mac", ip = "$reserved_ip" }]
TOML

provisiond_start "$bin" "$tmp" "$srv" "$tmp/log" "DHCP server ready"

# The fixed transaction id: busybox seeds once (srand) and takes its xid from rand().
cat >"$tmp/xid.c" <<'C'
#include <stdlib.h>

void srand(unsigned int seed) { (void)seed; }

int rand(void)
{
    const char *xid = getenv("ZC_XID");
    return xid ? (int)strtoul(xid, NULL, 0) : 0;
}
C
cc -shared -fPIC -o "$tmp/xid.so" "$tmp/xid.c" || fail "could not build the LD_PRELOAD library"

# The lease script: its variables go to $tmp/udhcpc-$ZC_RUN.EVENT; the address is set on bound
# (udhcpc -R unicasts its DHCPRELEASE from it) and removed on deconfig.
cat >"$tmp/udhcpc-hook.sh" <<HOOK
#!/bin/sh
env | grep -E '^(interface|ip|subnet|serverid|lease)=' >"$tmp/udhcpc-\$ZC_RUN.\$1"
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

# The first DHCPACK to port 68 for the client's MAC, as it arrives: its xid (the 4 bytes as
# busybox reads them into a native integer), the checksum field, and the checksum computed over
# the pseudo-header and the datagram with the field zeroed; then its lease time (option 51).
# Gives up after 60 s.
cat >"$tmp/sniff.py" <<'PY'
import socket, struct, sys, time
iface, mac, out, ready = sys.argv[1:]
chaddr = bytes.fromhex(mac.replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind((iface, 0))
deadline = time.monotonic() + 60
open(ready, "w").write("ready\n")

def ones_sum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total

while True:
    s.settimeout(max(deadline - time.monotonic(), 0.001))
    ip = s.recv(65535)[14:]
    ihl = (ip[0] & 0x0F) * 4
    if len(ip) < ihl + 8 or ip[9] != 17:
        continue
    udp_len = struct.unpack("!H", ip[ihl + 4:ihl + 6])[0]
    udp = ip[ihl:ihl + udp_len]
    if struct.unpack("!H", udp[2:4])[0] != 68:
        continue
    dhcp = udp[8:]
    if len(dhcp) < 240 or dhcp[0] != 2 or dhcp[28:34] != chaddr:
        continue
    opts, i = {}, 240
    while i + 1 < len(dhcp) and dhcp[i] != 255:
        if dhcp[i] == 0:
            i += 1
            continue
        code, length = dhcp[i], dhcp[i + 1]
        opts[code] = dhcp[i + 2:i + 2 + length]
        i += 2 + length
    if opts.get(53) != b"\x05":
        continue
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, udp_len)
    computed = ~ones_sum(pseudo + udp[:6] + b"\0\0" + udp[8:]) & 0xFFFF
    with open(out, "w") as f:
        f.write("xid=%d\n" % struct.unpack("=I", dhcp[4:8])[0])
        f.write("field=0x%04x\n" % struct.unpack("!H", udp[6:8])[0])
        f.write("computed=0x%04x\n" % computed)
        f.write("lease=%d\n" % struct.unpack("!I", opts.get(51, b"\0\0\0\0"))[0])
    break
PY

# sniff_start N: the sniffer of run N in the client's namespace, writing $tmp/sniff-N.
# sniff_read N: waits for it to end and sets SNIFF_XID, SNIFF_FIELD, SNIFF_COMPUTED and
# SNIFF_LEASE from what it saw (empty when no ACK came).
sniff_start() {
    ip netns exec "$c1" python3 "$tmp/sniff.py" "$iface" "$mac" "$tmp/sniff-$1" "$tmp/sniff-$1.ready" \
        >"$tmp/sniff-$1.log" 2>&1 &
    SNIFFER=$!
    pids+=("$SNIFFER")
    wait_for_line "$tmp/sniff-$1.ready" ready
}
sniff_read() {
    local key value
    wait "$SNIFFER" 2>/dev/null || true
    SNIFF_XID="" SNIFF_FIELD="" SNIFF_COMPUTED="" SNIFF_LEASE=""
    [ -e "$tmp/sniff-$1" ] || return 0
    while IFS== read -r key value; do
        case "$key" in
            xid) SNIFF_XID=$value ;;
            field) SNIFF_FIELD=$value ;;
            computed) SNIFF_COMPUTED=$value ;;
            lease) SNIFF_LEASE=$value ;;
        esac
    done <"$tmp/sniff-$1"
}

# udhcpc_cmd N XID: sets UDHCPC to busybox udhcpc in the foreground in the client's namespace,
# with transaction id XID and the lease script (which writes $tmp/udhcpc-N.EVENT), exiting when
# it gets no lease (-n, 3 discovers 2 s apart); more options may follow.
udhcpc_cmd() {
    UDHCPC=(ip netns exec "$c1" env LD_PRELOAD="$tmp/xid.so" ZC_XID="$2" ZC_RUN="$1"
        busybox udhcpc -f -n -t 3 -T 2 -i "$iface" -s "$tmp/udhcpc-hook.sh")
}

# Run 1: xid 0, a lease, then its release (-R: on SIGTERM), so that run 2 starts afresh.
sniff_start 1
udhcpc_cmd 1 0
"${UDHCPC[@]}" -R >"$tmp/udhcpc-1.log" 2>&1 &
udhcpc_pid=$!
pids+=("$udhcpc_pid")
wait_for_line "$tmp/udhcpc-1.bound" "^ip="
grep -q "^ip=$reserved_ip\$" "$tmp/udhcpc-1.bound" \
    || fail "run 1: udhcpc did not bind $reserved_ip: $(cat "$tmp/udhcpc-1.bound")"
sniff_read 1
[ -n "$SNIFF_COMPUTED" ] || fail "run 1: no DHCPACK sniffed: $(cat "$tmp/sniff-1.log")"
[ "$SNIFF_XID" = 0 ] || fail "run 1: the ACK's xid is $SNIFF_XID, not 0: LD_PRELOAD did not fix it"
[ "$SNIFF_LEASE" = "$lease_time" ] || fail "run 1: lease time $SNIFF_LEASE, not $lease_time"
kill -TERM "$udhcpc_pid"
wait "$udhcpc_pid" || true
wait_for_line "$tmp/log" "mac=$mac .*request=Release"
checksum1=$SNIFF_COMPUTED
echo "run 1: xid 0, ACK checksum $checksum1 (sent as $SNIFF_FIELD), $reserved_ip bound and released"

# The xid whose wire bytes are checksum1 (big-endian) then 0 0, as busybox's native integer.
xid=$(python3 -c 'import struct, sys; c = int(sys.argv[1], 16); print(struct.unpack("=I", struct.pack("!HH", c, 0))[0])' "$checksum1")

# Run 2: that xid; the ACK's checksum computes to 0. -q: exit 0 once the lease is bound.
sniff_start 2
udhcpc_rc=0
udhcpc_cmd 2 "$xid"
"${UDHCPC[@]}" -q >"$tmp/udhcpc-2.log" 2>&1 || udhcpc_rc=$?
sniff_read 2
[ -n "$SNIFF_COMPUTED" ] || fail "run 2: no DHCPACK sniffed: $(cat "$tmp/sniff-2.log")"
[ "$SNIFF_XID" = "$xid" ] || fail "run 2: the ACK's xid is $SNIFF_XID, not $xid"
[ "$SNIFF_LEASE" = "$lease_time" ] \
    || fail "run 2: lease time $SNIFF_LEASE, not $lease_time: the ACK is not run 1's with another xid"
[ "$SNIFF_COMPUTED" = 0x0000 ] \
    || fail "run 2: the ACK's checksum computes to $SNIFF_COMPUTED, not 0: the case is not reproduced"
[ "$udhcpc_rc" -eq 0 ] \
    || fail "run 2: udhcpc got no lease (exit $udhcpc_rc; ACK checksum sent as $SNIFF_FIELD): $(cat "$tmp/udhcpc-2.log")"
grep -q "^ip=$reserved_ip\$" "$tmp/udhcpc-2.bound" 2>/dev/null \
    || fail "run 2: the lease script did not see $reserved_ip: $(cat "$tmp/udhcpc-2.bound" 2>/dev/null)"
[ "$SNIFF_FIELD" = 0x0000 ] || fail "run 2: a checksum computing to 0 was sent as $SNIFF_FIELD, not 0x0000"
kill -0 "$PROVISIOND_PID" 2>/dev/null || fail "provisiond died: $(tail -n 20 "$tmp/log")"
echo "run 2: xid $xid, ACK checksum computes to 0 and is sent as $SNIFF_FIELD; udhcpc bound $reserved_ip"
