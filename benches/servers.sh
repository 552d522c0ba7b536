#!/usr/bin/env bash
# Benchmarks the HTTP and TFTP servers against nginx and tftpd-hpa serving the same bytes,
# all on 127.0.0.1. Prints figures; asserts nothing. Run as root (installs nginx, tftpd-hpa).
#   bash benches/servers.sh [phones] [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
phones=${1:-10000}
requests=${2:-100000}
export DEBIAN_FRONTEND=noninteractive
for p in nginx-light tftpd-hpa; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light tftpd-hpa
        break
    }
done
# The packaged services must not hold our ports or run in the background.
systemctl stop nginx tftpd-hpa 2>/dev/null || true

cargo build --release --quiet
bin=target/release/provisiond
work=$(mktemp -d)
# nginx workers run as www-data: they must be able to read the files.
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

config() { # config DATA_DIR
    cat <<TOML
[general]
data_dir = "$1"
plugins_dir = "$PWD/plugins"
# The benchmark creates 10,000 phones as fast as it can.
autocreate_per_second = 1000000
[http]
listen = "127.0.0.1:18667"
[api]
enabled = false
socket = "$1/api.sock"
[tftp]
listen = "127.0.0.1:16969"
max_per_client = 128
max_transfers = 512
[dhcpinfo]
socket = "$1/dhcpinfo.sock"
[log]
level = "warn"
TOML
}

wait_port() { # wait_port PROTO PORT
    for _ in $(seq 1 100); do
        ss -Hln"$1" "sport = :$2" | grep -q . && return 0
        sleep 0.1
    done
    echo "port $2 not listening" >&2
    return 1
}

echo "== HTTP: $phones phones fetching their MAC file, $requests requests, 64 in flight"
mkdir -p "$work/http/data" "$work/http/files"
config "$work/http/data" >"$work/http/provisiond.toml"
$bin serve --config "$work/http/provisiond.toml" 2>"$work/http/log" &
http_pid=$!
pids+=($http_pid)
wait_port t 18667
echo "-- provisiond"
$bin bench http --target 127.0.0.1:18667 --devices "$phones" --requests "$requests" --concurrency 64 --save "$work/http/files"

cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    server {
        listen 127.0.0.1:18080;
        root $work/http/files;
    }
}
NGINX
nginx -c "$work/nginx.conf" &
nginx_pid=$!
pids+=($nginx_pid)
wait_port t 18080
echo "-- nginx (the same files, static)"
$bin bench http --target 127.0.0.1:18080 --devices "$phones" --requests "$requests" --concurrency 64 --no-warmup

kill "$http_pid" "$nginx_pid" 2>/dev/null || true
wait "$http_pid" "$nginx_pid" 2>/dev/null || true

echo "== TFTP: 1 MiB file, 100 concurrent transfers, blksize 1428"
mkdir -p "$work/tftp/data/plugins" "$work/tftp/root"
cp -r plugins/yealink "$work/tftp/data/plugins/yealink"
mkdir -p "$work/tftp/data/plugins/yealink/static"
head -c 1048576 /dev/urandom >"$work/tftp/data/plugins/yealink/static/fw.rom"
cp "$work/tftp/data/plugins/yealink/static/fw.rom" "$work/tftp/root/fw.rom"
config "$work/tftp/data" >"$work/tftp/provisiond.toml"
sed -i 's/18667/18668/' "$work/tftp/provisiond.toml"
$bin serve --config "$work/tftp/provisiond.toml" 2>"$work/tftp/log" &
pids+=($!)
wait_port u 16969
# One HTTP request registers the benchmark's address as a Yealink phone; TFTP then
# identifies it by source address.
curl -s -o /dev/null -A "Yealink SIP-T54W 96.86.0.70 80:5e:c0:00:00:01" http://127.0.0.1:18668/805ec0000001.cfg
echo "-- provisiond"
$bin bench tftp --target 127.0.0.1:16969 --file fw.rom --concurrency 100 --transfers 300

in.tftpd --foreground --address 127.0.0.1:16970 --secure "$work/tftp/root" &
pids+=($!)
wait_port u 16970
echo "-- tftpd-hpa (the same file)"
$bin bench tftp --target 127.0.0.1:16970 --file fw.rom --concurrency 100 --transfers 300
