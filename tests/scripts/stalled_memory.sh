#!/usr/bin/env bash
# Resident memory of `pcapcast demo` with N HTTP readers that send the POST and never
# read: before they come, at its peak while they stall, and 3 s and 20 s after they leave.
#
#   cargo build --release -p pcapcast-cli
#   tests/scripts/stalled_memory.sh [READERS=256] [BACKLOG=1048576] [RUNTIME=smol] [BINARY]
#
# The demo replays its own traffic at --speed max, so the backlog rolls over fast.
set -euo pipefail
readers=${1:-256}
backlog=${2:-1048576}
runtime=${3:-smol}
bin=${4:-$(dirname "$0")/../../target/release/pcapcast}
dir=$(mktemp -d)
trap 'kill "$demo" 2>/dev/null || true; rm -rf "$dir"' EXIT

"$bin" demo -q -o "$dir/replay.pcap" -c 2000 >/dev/null 2>&1
"$bin" demo -q --runtime "$runtime" --socket "$dir/d.sock" --backlog "$backlog" --retain 0 \
  --replay "$dir/replay.pcap" --speed max >/dev/null 2>&1 &
demo=$!
for _ in $(seq 100); do [ -S "$dir/d.sock" ] && break; sleep 0.1; done
sleep 1

python3 - "$demo" "$dir/d.sock" "$readers" <<'PY'
import socket, sys, time
pid, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def fds():
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))
before, fds_before = rss(), fds()
clients = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"POST /capture HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert s.recv(12) == b"HTTP/1.1 200", "not attached"
    clients.append(s)
fds_with = fds()
peak, start = 0.0, time.time()
while time.time() - start < 8:
    peak = max(peak, rss())
    time.sleep(0.1)
for s in clients:
    s.close()
time.sleep(3)
soon = rss()
# jemalloc's background thread gives freed pages back about 10 s after they were freed.
time.sleep(17)
after = rss()
print(f"readers={n} before={before:.1f}MiB peak={peak:.1f}MiB (+{peak - before:.1f}) "
      f"3s after={soon:.1f}MiB 20s after={after:.1f}MiB (+{after - before:.1f})")
# Descriptors of the demo: its connections are gone once the outputs are detached.
print(f"descriptors: before={fds_before} with readers={fds_with} after={fds()}")
PY
