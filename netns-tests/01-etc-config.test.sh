# As root, in private mount and network namespaces: with no --config, provisiond reads
# /etc/provisiond/provisiond.toml and /etc/provisiond/conf.d/*.toml (the packaged layout),
# check-config exits 0/1 on them, and serve stops cleanly on SIGTERM.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=$1
tmp=$(mktemp -d)
created_etc=no
cleanup() {
    rm -rf "$tmp"
    if [ "$created_etc" = yes ]; then rmdir /etc/provisiond 2>/dev/null || true; fi
}
trap cleanup EXIT
if [ ! -d /etc/provisiond ]; then
    mkdir /etc/provisiond
    created_etc=yes
fi

mkdir -p "$tmp/etc/conf.d"
cat >"$tmp/etc/provisiond.toml" <<TOML
[general]
data_dir = "$tmp/data"
[api]
socket = "$tmp/api.sock"
[dhcpinfo]
socket = "$tmp/dhcpinfo.sock"
TOML
printf '[http]\nlisten = "127.0.0.1:8667"\n' >"$tmp/etc/conf.d/10-http.toml"

# in_ns CMD…: runs CMD with $tmp/etc mounted on /etc/provisiond, in a network namespace
# that has only its own loopback. It execs, so that a background job's $! is the daemon:
# call it only in a subshell ($(…) or &).
in_ns() {
    exec unshare --mount --net -- bash -c 'mount --bind "$0" /etc/provisiond && ip link set lo up && exec "$@"' "$tmp/etc" "$@"
}

out=$(in_ns env -u PROVISIOND_CONFIG "$bin" check-config 2>&1) || fail "check-config: $out"
echo "$out" | grep -q "configuration OK: /etc/provisiond/provisiond.toml, /etc/provisiond/conf.d/10-http.toml" \
    || fail "unexpected sources: $out"

printf '[http]\nlisten = "127.0.0.1:8667"\nbogus = true\n' >"$tmp/etc/conf.d/20-bad.toml"
if out=$(in_ns env -u PROVISIOND_CONFIG "$bin" check-config 2>&1); then
    fail "check-config accepted an unknown key: $out"
fi
echo "$out" | grep -q "/etc/provisiond/conf.d/20-bad.toml: http.bogus" || fail "error does not name file and key: $out"
rm "$tmp/etc/conf.d/20-bad.toml"

in_ns env -u PROVISIOND_CONFIG -u RUST_LOG -u JOURNAL_STREAM "$bin" serve 2>"$tmp/log" &
pid=$!
wait_for_line "$tmp/log" "store open; ready"
grep -q "starting with configuration from /etc/provisiond/provisiond.toml, /etc/provisiond/conf.d/10-http.toml" "$tmp/log" \
    || fail "serve did not use the /etc files: $(cat "$tmp/log")"
# The job execs unshare, which execs bash, which execs provisiond: $pid is the daemon.
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "serve exited with $status: $(cat "$tmp/log")"
grep -q "stopped cleanly" "$tmp/log" || fail "no clean stop: $(cat "$tmp/log")"
[ -d "$tmp/data/db" ] || fail "no store in the configured data_dir"
