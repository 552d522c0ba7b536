# Helpers sourced by netns-tests/*.test.sh.

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# wait_for_line FILE PATTERN: waits (bounded) until FILE has a line matching PATTERN.
wait_for_line() {
    local file=$1 pattern=$2 i
    for i in $(seq 1 300); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "--- $file:" >&2
    cat "$file" >&2
    fail "no line matching '$pattern' in $file"
}

# lan_up TAG SERVER_CIDR MAC...: one LAN in namespaces of its own. Namespace "$TAG-srv" holds
# bridge "br$TAG" with SERVER_CIDR (e.g. 10.213.0.1/24); for the Nth MAC, namespace "$TAG-cN"
# holds interface "v$TAG-N" with that MAC, cabled to the bridge. Sets LAN_NAMESPACES (every
# namespace made, for lan_down). Names stay under 15 characters for tags of up to 8.
lan_up() {
    local tag=$1 cidr=$2 n=0 mac
    shift 2
    LAN_NAMESPACES=("$tag-srv")
    ip netns add "$tag-srv"
    ip -n "$tag-srv" link set lo up
    ip -n "$tag-srv" link add "br$tag" type bridge forward_delay 0
    ip -n "$tag-srv" addr add "$cidr" dev "br$tag"
    ip -n "$tag-srv" link set "br$tag" up
    for mac in "$@"; do
        n=$((n + 1))
        ip netns add "$tag-c$n"
        LAN_NAMESPACES+=("$tag-c$n")
        ip link add "v$tag-$n" netns "$tag-c$n" address "$mac" type veth \
            peer name "p$tag-$n" netns "$tag-srv"
        ip -n "$tag-c$n" link set lo up
        ip -n "$tag-c$n" link set "v$tag-$n" up
        ip -n "$tag-srv" link set "p$tag-$n" master "br$tag" up
    done
}

# lan_down: deletes the namespaces lan_up made (their interfaces go with them).
lan_down() {
    local ns
    for ns in ${LAN_NAMESPACES[@]+"${LAN_NAMESPACES[@]}"}; do ip netns del "$ns" 2>/dev/null || true; done
}

# require_netns: skips the test (exit 0, with the reason) when `ip netns` cannot be used.
require_netns() {
    command -v ip >/dev/null && ip netns list >/dev/null 2>&1 \
        || { echo "SKIP: 'ip netns' is not available"; exit 0; }
}
