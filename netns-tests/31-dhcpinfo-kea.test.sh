# Kea (kea-dhcp4-server, run_script hook of kea-common) feeds provisiond, in network
# namespaces of their own:
#
#   [srv ns] bridge 10.213.31.1/24: provisiond serve (DHCP off, HTTP 10.213.31.1:8667)
#            + kea-dhcp4 on the bridge, etc/examples/kea-dhcp4.json with this LAN's addresses
#              and files in the temp dir; its run_script "name" is a two-line stand-in for
#              /usr/bin/provisiond that only names the test's configuration
#      └─ veth ── [c1 ns] dhclient, vendor class "yealink"
#
# The phone gets a lease and option 66 from dhcp-snippet's Yealink class; Kea's
# leases4_committed runs provisiond, and the admin API shows the device with its MAC and the
# leased IP before the phone made any request to provisiond. Kea's run_script exports no
# vendor class (docs/dhcpinfo.md), so the device has no vendor yet (asserted, with the
# variables Kea passed); it becomes Yealink when the phone fetches its MAC file. `dhclient -r`
# makes Kea run lease4_release, which clears the device's IP.
# Every address is inside namespaces this test creates; they are deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
here="$(cd "$(dirname "$0")" && pwd)"
run_script=/usr/lib/x86_64-linux-gnu/kea/hooks/libdhcp_run_script.so

require_netns
command -v kea-dhcp4 >/dev/null || [ -x /usr/sbin/kea-dhcp4 ] || fail "kea-dhcp4 not found: apt-get install kea-dhcp4-server"
[ -e "$run_script" ] || fail "$run_script not found: apt-get install kea-common"
command -v dhclient >/dev/null || fail "dhclient not found: apt-get install isc-dhcp-client"
command -v curl >/dev/null || fail "curl not found: apt-get install curl"
command -v python3 >/dev/null || fail "python3 not found: apt-get install python3"
kea=$(command -v kea-dhcp4 || echo /usr/sbin/kea-dhcp4)

tag="dk$$"
srv="$tag-srv"
c1="$tag-c1"
br="br$tag"
mac="80:5e:c0:31:00:01"
netns_test_init provisiond.log kea.log kea-hook.err dhclient.log # printed on failure

lan_up "$tag" 10.213.31.1/24 "$mac"
dhcpinfo_serve "$bin" "$tmp" "$srv" 10.213.31.1

# Kea runs the script with the hook point as only argument and only its own variables: the
# stand-in keeps them (one file per call) and runs provisiond as the example's "name" would,
# with the test's configuration in place of /etc/provisiond/provisiond.toml.
cat >"$tmp/kea-hook.sh" <<HOOK
#!/bin/sh
env >"$tmp/kea-env.\$1.\$\$"
PROVISIOND_CONFIG="$tmp/provisiond.toml" exec "$bin" "\$@" 2>>"$tmp/kea-hook.err"
HOOK
chmod +x "$tmp/kea-hook.sh"
: >"$tmp/kea-hook.err"

# The shipped example, with this LAN's addresses, the temp dir's files and the client classes
# that dhcp-snippet writes from the test daemon's configuration (base_url and plugins).
"$bin" dhcp-snippet --config "$tmp/provisiond.toml" --format kea >"$tmp/snippet.json" \
    2>"$tmp/snippet.err" || fail "dhcp-snippet failed: $(cat "$tmp/snippet.err")"
python3 - "$here/../etc/examples/kea-dhcp4.json" "$tmp" "$br" "$run_script" "$tmp/snippet.json" >"$tmp/kea.json" <<'PY'
import json, sys
example, tmp, bridge, run_script, snippet = sys.argv[1:]
text = open(example).read()
text = text.replace("http://192.0.2.10:8667/", "http://10.213.31.1:8667/").replace("192.0.2.", "10.213.31.")
conf = json.loads(text)
dhcp4 = conf["Dhcp4"]
dhcp4["interfaces-config"]["interfaces"] = [bridge]
assert dhcp4["lease-database"]["type"] == "memfile"
dhcp4["lease-database"]["name"] = tmp + "/kea-leases4.csv"
hooks = [h for h in dhcp4["hooks-libraries"] if h["library"] == run_script]
assert len(hooks) == 1, "no run_script hook library %s in the example" % run_script
assert hooks[0]["parameters"]["name"] == "/usr/bin/provisiond", hooks[0]
hooks[0]["parameters"]["name"] = tmp + "/kea-hook.sh"
assert "client-classes" in dhcp4, "no client-classes in the example"
lines = [l for l in open(snippet).read().splitlines() if not l.startswith("//")]
dhcp4["client-classes"] = json.loads("\n".join(lines))["client-classes"]
assert any(c["name"] == "provisiond-yealink" for c in dhcp4["client-classes"]), "no Yealink class"
dhcp4["loggers"] = [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
json.dump(conf, sys.stdout, indent=2)
PY
export KEA_PIDFILE_DIR="$tmp" KEA_LOCKFILE_DIR="$tmp"
ip netns exec "$srv" "$kea" -t "$tmp/kea.json" >"$tmp/kea-t.log" 2>&1 \
    || fail "kea-dhcp4 rejects the example: $(cat "$tmp/kea-t.log")"
ip netns exec "$srv" "$kea" -c "$tmp/kea.json" >"$tmp/kea.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/kea.log" "DHCP4_STARTED"

# The phone's lease, with option 66 from the snippet's "provisiond-yealink" class.
dhclient_up "$tmp" dhclient "$c1" "v$tag-1" yealink
ip=$DHCLIENT_IP
case "$ip" in
    10.213.31.1[0-9][0-9]) ;;
    *) fail "dhclient got '$ip', not an address of the example's pool" ;;
esac
[ "$DHCLIENT_OPT66" = "http://10.213.31.1:8667/" ] || fail "option 66: '$DHCLIENT_OPT66'"
echo "dhclient: $ip, option 66 $DHCLIENT_OPT66"

# leases4_committed ran provisiond: MAC and IP are known before the phone asks provisiond for
# anything. No vendor: Kea passed no variable with the vendor class ("yealink").
dhcpinfo_device "$tmp" "$mac" "$ip" ""
committed=$(grep -l "^LEASES4_AT0_ADDRESS=$ip\$" "$tmp"/kea-env.leases4_committed.* | head -n 1) \
    || fail "no leases4_committed call for $ip: $(ls "$tmp")"
grep -q "^LEASES4_AT0_HWADDR=$mac\$" "$committed" || fail "leases4_committed without the MAC: $(cat "$committed")"
! grep -qi -e yealink -e 7965616c696e6b "$committed" \
    || fail "Kea now exports the vendor class (update the test and docs/dhcpinfo.md): $(cat "$committed")"
[ "$(dhcpinfo_counter "$tmp" malformed)" = 0 ] || fail "Kea's hook sent a malformed event"
[ ! -s "$tmp/kea-hook.err" ] || fail "provisiond complained in Kea's hook: $(cat "$tmp/kea-hook.err")"
echo "commit: device $mac ip $ip, no vendor (Kea exports none)"

# The phone fetches its MAC file: the file name makes it a Yealink.
dhcpinfo_fetch "$tmp" "$c1" "$mac" "$DHCLIENT_OPT66"
dhcpinfo_device "$tmp" "$mac" "$ip" Yealink
echo "the phone fetched its MAC file from the URL of option 66; vendor Yealink"

# The release: Kea runs lease4_release, provisiond clears the IP.
dhclient_release "$tmp" dhclient "$c1" "v$tag-1"
dhcpinfo_device "$tmp" "$mac" "" Yealink
ls "$tmp"/kea-env.lease4_release.* >/dev/null 2>&1 || fail "no lease4_release call"
[ ! -s "$tmp/kea-hook.err" ] || fail "provisiond complained in Kea's hook: $(cat "$tmp/kea-hook.err")"
[ "$(dhcpinfo_counter "$tmp" accepted)" -ge 2 ] || fail "fewer than 2 accepted events"
echo "release: device $mac has no IP any more"
