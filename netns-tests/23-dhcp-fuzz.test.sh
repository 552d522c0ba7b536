# provisiond's DHCP server under 10,000 random and malformed packets from a namespace on its LAN,
# then a real client (network namespaces of their own, 10.213.23.128/25, provisiond .129):
#
#   [srv ns] bridge 10.213.23.129/25 ── veth ── [c1 ns] fuzz.py, static 10.213.23.130
#                                     └─ veth ── [c2 ns] dhclient (vendor class "yealink")
#
# fuzz.py (python3, stdlib only, seeded: every run sends the same packets) sends to UDP port 67,
# broadcast (255.255.255.255 and 10.213.23.255) and unicast: random bytes, truncated packets,
# wrong magic cookies, hlen > 16, options running past the end, option 52 overload loops and
# bad values, a giant (joined) option 55, wrong message types, datagrams over 4096 bytes, valid
# DISCOVERs and INFORMs with random fields (flags, giaddr, chaddr, options 57/61/82/118…) and
# mutations of valid messages. Every 50 packets it waits for the answer to an INFORM of its
# own, so that the daemon's socket never overflows and every packet is really read.
# Then: the daemon is alive, logged no panic, counted in /metrics at least as many malformed
# drops as the packets that are malformed by construction; a burst of 800 INFORMs
# from addresses nobody holds is answered without one failed send (replies on the link go to
# the client's MAC and never wait for ARP); dhclient gets a lease and option 66; and, once
# stopped, the daemon's log accounts for every malformed drop in a few lines (rate limit).
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1

require_netns
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found: apt-get install python3"

tag="fz$$"
srv="$tag-srv"
br="br$tag"
server=10.213.23.129
fuzzer=10.213.23.130
mac1="02:00:00:21:23:81" # the fuzzer's interface
mac2="80:5e:c0:21:23:82" # dhclient
seed=20261123
count=10000
netns_test_init

lan_up "$tag" "$server/25" "$mac1" "$mac2"
ip -n "$tag-c1" addr add "$fuzzer/25" dev "v$tag-1"

# offer_hold_secs = 2: the offers made to the fuzzer's DISCOVERs lapse quickly.
provisiond_conf "$tmp" "$server" <<TOML
[dhcp]
mode = "server"
interfaces = ["$br"]
port = 67
offer_hold_secs = 2

[[dhcp.pools]]
subnet = "10.213.23.128/25"
ranges = [{ start = "10.213.23.140", end = "10.213.23.250" }]
router = "$server"
domain = "fuzz.test"
lease_time = 600
TOML

provisiond_start "$bin" "$tmp" "$srv" "$tmp/log" "DHCP server ready"

cat >"$tmp/fuzz.py" <<'PY'
"""Sends COUNT random and mutated DHCP packets to SERVER's port 67; prints a summary."""
import random
import socket
import struct
import sys

seed, count, iface, server, me, mac_text, summary = sys.argv[1:]
count = int(count)
rng = random.Random(int(seed))
mac = bytes.fromhex(mac_text.replace(":", ""))
MAGIC = bytes([99, 130, 83, 99])
ZERO = bytes(4)
SUBNET_BROADCAST = "10.213.23.255"


def ip(text):
    return socket.inet_aton(text)


def rbytes(n):
    return rng.randbytes(n)


def opt(code, value):
    return bytes([code, len(value)]) + value


def header(op=1, htype=1, hlen=6, hops=0, xid=None, secs=0, flags=0, ciaddr=ZERO, giaddr=ZERO,
           chaddr=None, sname=b"", file=b""):
    if xid is None:
        xid = rng.getrandbits(32)
    chaddr = chaddr if chaddr is not None else rbytes(6)
    return struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, htype, hlen, hops, xid, secs, flags,
                       ciaddr, ZERO, ZERO, giaddr, chaddr, sname, file)


def message(msg_type, options=b"", **fields):
    return header(**fields) + MAGIC + opt(53, bytes([msg_type])) + options + b"\xff"


# A few dozen clients and client identifiers, so that valid DISCOVERs do not take every
# address of the pool for the offer hold.
MACS = [bytes([0x02, 0xf0]) + rbytes(4) for _ in range(48)]
CLIENT_IDS = [b"\x01" + m for m in MACS[:12]] + [rbytes(rng.randrange(2, 40)) for _ in range(12)]
VENDORS = [b"yealink", b"Polycom-SPIP550", b"Cisco Systems, Inc. IP Phone CP-8841",
           b"snom", b"Grandstream GXP2170", b"MSFT 5.0", b"udhcp 1.35.0", b"\xff\xfe\x00yea"]


def random_address():
    return rng.choice([
        ZERO, ZERO, rbytes(4), ip("10.213.23.140"), ip("10.213.23.250"), ip("10.213.23.200"),
        ip(server), ip(SUBNET_BROADCAST), ip("255.255.255.255"), ip("127.0.0.1"),
        ip("224.0.0.1"), ip("10.213.23.5"), ip("192.0.2.1"),
    ])


def relay_info():
    """Option 82 value: sub-options, now and then with a bad length or a link selection."""
    out = b""
    for _ in range(rng.randrange(0, 6)):
        sub = rng.choice([1, 2, 5, 5, 151, rng.randrange(256)])
        value = ip("10.213.23.130") if sub == 5 and rng.random() < 0.5 else rbytes(rng.randrange(0, 30))
        length = len(value) if rng.random() < 0.8 else rng.randrange(256)
        out += bytes([sub, length]) + value
    return out[:255]


def random_options():
    """Options with random values, in random order, with pads here and there."""
    pool = [
        lambda: opt(60, rng.choice(VENDORS)),
        lambda: opt(61, rng.choice(CLIENT_IDS) if rng.random() < 0.95 else rbytes(rng.randrange(0, 255))),
        lambda: opt(55, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))),
        lambda: opt(57, rbytes(2) if rng.random() < 0.8 else rbytes(rng.randrange(0, 5))),
        lambda: opt(50, random_address() if rng.random() < 0.8 else rbytes(rng.randrange(0, 8))),
        lambda: opt(54, rng.choice([ip(server), random_address()])),
        lambda: opt(82, relay_info()),
        lambda: opt(118, random_address() if rng.random() < 0.8 else rbytes(rng.randrange(0, 8))),
        lambda: opt(12, rbytes(rng.randrange(0, 64))),
        lambda: opt(77, rbytes(rng.randrange(0, 40))),
        lambda: opt(43, rbytes(rng.randrange(0, 255))),
        lambda: opt(rng.randrange(1, 255), rbytes(rng.randrange(0, 255))),
        lambda: b"\x00" * rng.randrange(1, 8),
    ]
    out = b""
    for _ in range(rng.randrange(0, 8)):
        option = rng.choice(pool)()
        if len(out) + len(option) > 1000:  # whole options only: the packet stays well-formed
            break
        out += option
    return out


def random_fields():
    return dict(
        hops=rng.randrange(256) if rng.random() < 0.2 else 0,
        secs=rng.getrandbits(16),
        flags=rng.getrandbits(16) if rng.random() < 0.3 else rng.choice([0, 0x8000]),
        ciaddr=random_address() if rng.random() < 0.2 else ZERO,
        giaddr=random_address() if rng.random() < 0.4 else ZERO,
        chaddr=rng.choice(MACS) + (rbytes(10) if rng.random() < 0.1 else b""),
        sname=rbytes(64) if rng.random() < 0.1 else b"",
        file=rbytes(128) if rng.random() < 0.1 else b"",
    )


def discover():
    return message(1, random_options(), **random_fields())


def any_valid():
    return message(rng.choice([1, 3, 4, 7, 8]), random_options(), **random_fields())


# Each generator returns (packet, malformed): malformed is True only when the server must drop
# the packet as malformed whatever the random choices were.
def g_random():
    data = rbytes(rng.choice([rng.randrange(0, 240), rng.randrange(240, 1400)]))
    return data, len(data) < 240 or data[0] != 1


def g_truncated():
    data = discover()
    return data[:rng.randrange(0, 240)], True


def g_truncated_options():
    data = discover()[:-1] + opt(60, b"yealink-phone")
    return data[:-rng.randrange(1, 13)], True


def g_cookie():
    data = bytearray(discover())
    bad = rbytes(4)
    while bad == MAGIC:
        bad = rbytes(4)
    data[236:240] = bad
    return bytes(data), True


def g_hardware():
    if rng.random() < 0.7:
        fields = dict(hlen=rng.choice([0, rng.randrange(17, 256)]))
    else:
        fields = dict(htype=rng.choice([0, 6, 32, rng.randrange(2, 256)]))
    return message(1, random_options(), **fields), True


def g_overrun():
    tail = bytes([rng.randrange(1, 255)])
    if rng.random() < 0.8:
        length = rng.randrange(20, 256)
        tail += bytes([length]) + rbytes(rng.randrange(0, length - 10))
    return header() + MAGIC + opt(53, b"\x01") + random_options() + tail, True


def g_overload_loop():
    """Option 52 in the main area, and again (a loop) inside `file` and `sname`."""
    file = opt(52, b"\x03") + opt(52, b"\x01") + opt(55, bytes([1, 3, 66])) + b"\xff"
    sname = opt(52, b"\x03") + opt(60, b"yealink") + b"\xff"
    if rng.random() < 0.3:
        file = opt(52, b"\x03") * 40 + b"\xff" * 8  # fills `file` with overloads
    data = message(1, opt(52, bytes([rng.choice([1, 2, 3])])), sname=sname, file=file)
    return data, False


def g_overload_bad():
    if rng.random() < 0.5:
        value = bytes([rng.choice([0, 4, 5, 255, rng.randrange(4, 256)])])
        return message(1, opt(52, value)), True
    if rng.random() < 0.5:
        return message(1, opt(52, rbytes(rng.choice([0, 2, 3, 7])))), True
    # Overloaded `file` whose options run past its end.
    file = opt(60, b"yealink") + bytes([55, 200]) + bytes(range(1, 40))
    return message(1, opt(52, b"\x01"), file=file), True


def g_giant_55():
    if rng.random() < 0.3:
        # One full-length option 55: valid, every option asked for.
        return message(1, opt(55, bytes(range(1, 256)))), False
    # Split option 55 (RFC 3396) joined past 1024 bytes.
    pieces = b"".join(opt(55, rbytes(255)) for _ in range(rng.randrange(5, 9)))
    return message(1, pieces), True


def g_message_type():
    kind = rng.randrange(4)
    if kind == 0:
        return header() + MAGIC + opt(60, b"yealink") + opt(55, b"\x01\x42") + b"\xff", True
    if kind == 1:
        return header() + MAGIC + opt(53, rbytes(rng.choice([0, 2, 3]))) + b"\xff", True
    if kind == 2:
        value = rng.choice([0, 2, 5, 6, 9, 13, 255])
        return header() + MAGIC + opt(53, bytes([value])) + b"\xff", True
    return header(op=rng.choice([0, 2, 3, 255])) + MAGIC + opt(53, b"\x01") + b"\xff", True


def g_huge():
    return discover() + rbytes(rng.randrange(4097, 9000)), True


def g_mutated():
    data = bytearray(any_valid())
    for _ in range(rng.randrange(1, 8)):
        what = rng.randrange(4)
        i = rng.randrange(len(data))
        if what == 0:
            data[i] = rng.randrange(256)
        elif what == 1:
            data[i] ^= 1 << rng.randrange(8)
        elif what == 2:
            data[i:i] = rbytes(rng.randrange(1, 8))
        elif len(data) > 1:
            del data[i:i + rng.randrange(1, 8)]
    return bytes(data), False


def g_valid_discover():
    return discover(), False


def g_valid_inform():
    return message(8, random_options(), **random_fields()), False


GENERATORS = [
    (g_random, 10), (g_truncated, 6), (g_truncated_options, 4), (g_cookie, 6), (g_hardware, 6),
    (g_overrun, 8), (g_overload_loop, 5), (g_overload_bad, 6), (g_giant_55, 6),
    (g_message_type, 6), (g_huge, 1), (g_mutated, 16), (g_valid_discover, 14),
    (g_valid_inform, 6),
]
names = [g.__name__[2:] for g, _ in GENERATORS]
weights = [w for _, w in GENERATORS]


def udp_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("0.0.0.0", port))
    return s


client = udp_socket(68)   # replies to INFORMs from `me` come back here
other = udp_socket(0)     # an ephemeral source port
barrier_timeouts = 0


def barrier(n):
    """An INFORM from `me`: its ACK (unicast to me:68) comes after every packet sent before."""
    global barrier_timeouts
    xid = 0xF0000000 | n
    probe = message(8, opt(55, b"\x01"), xid=xid, ciaddr=ip(me), chaddr=mac)
    # A reply can be lost: while the server's replies to absent hosts (random ciaddr, giaddr)
    # wait for ARP, its socket's send buffer is full and its sends fail for ~3 s.
    for _ in range(10):
        client.sendto(probe, (server, 67))
        client.settimeout(1.0)
        try:
            while True:
                reply = client.recv(4096)
                if len(reply) >= 8 and reply[0] == 2 and struct.unpack("!I", reply[4:8])[0] == xid:
                    return
        except socket.timeout:
            barrier_timeouts += 1
    raise SystemExit("no answer to the barrier INFORM %d: is the server alive?" % n)


barrier(0)
sent = {name: 0 for name in names}
malformed = 0
for n in range(1, count + 1):
    index = rng.choices(range(len(GENERATORS)), weights)[0]
    data, certain = GENERATORS[index][0]()
    sent[names[index]] += 1
    malformed += certain
    dst = rng.choice([server, server, "255.255.255.255", SUBNET_BROADCAST])
    sock = client if rng.random() < 0.5 else other
    try:
        sock.sendto(data, (dst, 67))
    except OSError as e:  # e.g. EMSGSIZE: counted as not sent
        sent[names[index]] -= 1
        malformed -= certain
        print("not sent (%s): %d bytes" % (e, len(data)), file=sys.stderr)
    if n % 50 == 0:
        barrier(n)
with open(summary, "w") as out:
    out.write("sent=%d\n" % sum(sent.values()))
    out.write("malformed=%d\n" % malformed)
    out.write("barrier_timeouts=%d\n" % barrier_timeouts)
    for name in names:
        out.write("%s=%d\n" % (name, sent[name]))
PY

start=$(date +%s)
ip netns exec "$tag-c1" timeout 300 python3 "$tmp/fuzz.py" "$seed" "$count" "v$tag-1" "$server" \
    "$fuzzer" "$mac1" "$tmp/summary" >"$tmp/fuzz.log" 2>&1 \
    || fail "fuzz.py failed: $(tail -n 20 "$tmp/fuzz.log"); daemon: $(tail -n 20 "$tmp/log")"
echo "fuzz: $(tr '\n' ' ' <"$tmp/summary")in $(($(date +%s) - start)) s"
sent=$(sed -n 's/^sent=//p' "$tmp/summary")
malformed=$(sed -n 's/^malformed=//p' "$tmp/summary")
[ "$sent" -ge "$count" ] || fail "only $sent of $count packets sent: $(cat "$tmp/fuzz.log")"

# Still alive, no panic (caught or not); the log's account of the drops is checked at the end,
# once the daemon stopped and told what its rate limit suppressed.
kill -0 "$PROVISIOND_PID" 2>/dev/null || fail "provisiond died under the fuzzer: $(tail -n 30 "$tmp/log")"
if grep -qi "panicked" "$tmp/log"; then
    fail "provisiond panicked: $(grep -i -m 5 -A 5 panicked "$tmp/log")"
fi

# /metrics counts every malformed packet.
dhcp_metric() { # OUTCOME
    curl -sf --unix-socket "$tmp/api.sock" http://localhost/metrics \
        | sed -n "s/^provisiond_dhcp_packets_total{outcome=\"$1\"} //p"
}
counter=$(dhcp_metric malformed)
[ -n "$counter" ] || fail "/metrics has no provisiond_dhcp_packets_total{outcome=\"malformed\"}"
[ "$counter" -ge "$malformed" ] \
    || fail "/metrics counts $counter malformed DHCP packets, fewer than the $malformed sent"
echo "/metrics: $counter malformed DHCP packets"

# 800 INFORMs from addresses nobody holds on the LAN: their ACKs go to the clients' hardware
# addresses, so none waits for ARP and no send fails (by UDP they filled the socket's send
# buffer for the 3 s ARP takes to give up, and every other reply was lost meanwhile).
acks0=$(dhcp_metric ack)
errors0=$(dhcp_metric send_error)
cat >"$tmp/informs.py" <<'PY2'
import socket, struct, sys
iface, server = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
for n in range(800):
    ciaddr = socket.inet_aton("10.213.23.%d" % (200 + n % 4))
    chaddr = bytes([2, 0, 0x5e, 0x10, n >> 8, n & 0xFF]) + bytes(10)
    msg = struct.pack("!BBBBIHH4s4s4s4s16s", 1, 1, 6, 0, 0xA0000000 | n, 0, 0, ciaddr,
                      bytes(4), bytes(4), bytes(4), chaddr)
    msg += bytes(192) + b"\x63\x82\x53\x63" + b"\x35\x01\x08" + b"\x37\x01\x01" + b"\xff"
    s.sendto(msg, (server, 67))
PY2
ip netns exec "$tag-c1" python3 "$tmp/informs.py" "v$tag-1" "$server" \
    || fail "informs.py failed"
i=0
until [ "$(dhcp_metric ack)" -ge $((acks0 + 800)) ]; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || fail "800 INFORMs were not all answered: acks $acks0 -> $(dhcp_metric ack)"
    sleep 0.1
done
errors=$(($(dhcp_metric send_error) - errors0))
[ "$errors" -eq 0 ] || fail "$errors replies to the 800 INFORMs could not be sent"
echo "800 INFORMs from absent addresses: all answered, no send error"

# A real client still gets its lease and option 66.
dhclient_up "$tmp" dhclient "$tag-c2" "v$tag-2" yealink domain-name
ip2=$DHCLIENT_IP
case "$ip2" in
    10.213.23.1[4-9][0-9] | 10.213.23.2[0-4][0-9] | 10.213.23.250) ;;
    *) fail "dhclient got '$ip2' after the fuzzer, not an address of the pool: $(cat "$tmp/dhclient.BOUND")" ;;
esac
grep -q "^new_tftp_server_name=http://$server:8667/\$" "$tmp/dhclient.BOUND" \
    || fail "no option 66 after the fuzzer: $(cat "$tmp/dhclient.BOUND")"
kill -0 "$PROVISIOND_PID" 2>/dev/null || fail "provisiond died: $(tail -n 20 "$tmp/log")"
echo "ok: after $sent fuzzed packets dhclient got $ip2 and option 66"

# Every malformed packet was read and dropped, and the log says so in a few lines: the first
# drops of the fuzzer's address one by one (10 a minute), the others in summaries ("N malformed
# DHCP datagrams from 10.213.23.130 in the last 60 s (suppressed)"), the last one written at
# shutdown.
kill -TERM "$PROVISIOND_PID"
wait "$PROVISIOND_PID" || fail "provisiond did not stop cleanly: $(tail -n 20 "$tmp/log")"
drops=$(grep -c "DHCP datagram.* dropped" "$tmp/log" || true)
suppressed=$(sed -n 's/.*malformed DHCP datagrams from .* suppressed=\([0-9]*\).*/\1/p' "$tmp/log" \
    | awk '{ n += $1 } END { print n + 0 }')
[ $((drops + suppressed)) -ge "$malformed" ] \
    || fail "$drops malformed drops logged and $suppressed suppressed, fewer than the $malformed malformed packets sent"
[ "$drops" -lt "$malformed" ] || fail "$drops malformed drops logged one by one: not rate-limited"
echo "log: $drops malformed datagrams dropped one by one and $suppressed in summaries (at least $malformed sent)"
