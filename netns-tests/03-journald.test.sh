# As root, in private mount and network namespaces: with JOURNAL_STREAM set (as systemd sets
# it), provisiond sends its records to journald's native socket with structured fields. A
# socat stands in for journald on /run/systemd/journal/socket (a tmpfs over /run in the
# namespace); a Yealink phone fetches its file, and the access record carries DEVICE_MAC,
# TENANT, PLUGIN, DEVICE and STATUS, the capability record CAP_EFF, every record PRIORITY and
# SYSLOG_IDENTIFIER=provisiond.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
command -v socat >/dev/null || fail "socat is missing"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/provisiond.toml" <<TOML
[general]
data_dir = "$tmp/data"
plugins_dir = "$(cd "$(dirname "$0")/.." && pwd)/plugins"
[http]
listen = "127.0.0.1:8667"
[tftp]
listen = "127.0.0.1:6969"
[api]
socket = "$tmp/api.sock"
[dhcpinfo]
socket = "$tmp/dhcpinfo.sock"
TOML

# journal_value FIELD: the values of FIELD in the captured datagrams, decoded from journald's
# native protocol (NAME=value\n, or NAME\n + 64-bit little-endian length + value + \n).
journal_value() {
    perl -0777 -ne '
        my ($d, $p) = ($_, 0);
        while ($p < length $d) {
            my $nl = index($d, "\n", $p);
            last if $nl < 0;
            my $eq = index($d, "=", $p);
            if ($eq >= 0 && $eq < $nl) {
                print substr($d, $p, $nl - $p), "\n";
                $p = $nl + 1;
            } else {
                my $len = unpack("Q<", substr($d, $nl + 1, 8));
                my $v = substr($d, $nl + 9, $len);
                $v =~ s/\n/\\n/g;
                print substr($d, $p, $nl - $p), "=", $v, "\n";
                $p = $nl + 9 + $len + 1;
            }
        }' "$tmp/journal" | sed -n "s/^$1=//p"
}

unshare --mount --net -- bash -s "$bin" "$tmp" <<'SCRIPT' >"$tmp/run.log" 2>&1 || fail "$(cat "$tmp/run.log")"
set -euo pipefail
bin=$1 tmp=$2
ip link set lo up
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
socat -u UNIX-RECV:/run/systemd/journal/socket OPEN:"$tmp/journal",creat,append &
socat_pid=$!
for i in $(seq 1 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
env -u RUST_LOG -u PROVISIOND_CONFIG JOURNAL_STREAM=0:0 "$bin" serve --config "$tmp/provisiond.toml" 2>"$tmp/stderr" &
pid=$!
for i in $(seq 1 300); do grep -aq "store open; ready" "$tmp/journal" 2>/dev/null && break; sleep 0.1; done
curl -s -o /dev/null -A "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33" http://127.0.0.1:8667/805ec0112233.cfg
kill -TERM "$pid"
wait "$pid"
sleep 0.2
kill "$socat_pid"
SCRIPT

[ -s "$tmp/journal" ] || fail "nothing reached the journal socket; stderr: $(cat "$tmp/stderr")"
grep -aq "store open; ready" "$tmp/journal" || fail "no ready record in the journal"
[ ! -s "$tmp/stderr" ] || fail "records went to stderr too: $(cat "$tmp/stderr")"
journal_value DEVICE_MAC | grep -qx "80:5e:c0:11:22:33" || fail "no DEVICE_MAC: $(journal_value DEVICE_MAC)"
journal_value TENANT | grep -qx "master" || fail "no TENANT=master: $(journal_value TENANT)"
journal_value PLUGIN | grep -qx "yealink" || fail "no PLUGIN=yealink: $(journal_value PLUGIN)"
journal_value STATUS | grep -qx "200" || fail "no STATUS=200: $(journal_value STATUS)"
[ -n "$(journal_value DEVICE)" ] || fail "no DEVICE field"
journal_value CAP_EFF | grep -qx "0000000000000000" || fail "no CAP_EFF: $(journal_value CAP_EFF)"
[ "$(journal_value SYSLOG_IDENTIFIER | sort -u)" = provisiond ] || fail "SYSLOG_IDENTIFIER: $(journal_value SYSLOG_IDENTIFIER | sort -u)"
journal_value PRIORITY | grep -qx 6 || fail "no PRIORITY=6 (info): $(journal_value PRIORITY | sort -u)"
journal_value MESSAGE | grep -qx "stopped cleanly" || fail "no clean stop in the journal"
# Fields keep their own names: no F_ prefix.
if grep -aq "^F_" "$tmp/journal"; then fail "prefixed fields (F_…) in the journal"; fi
