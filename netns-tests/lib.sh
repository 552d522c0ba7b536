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
