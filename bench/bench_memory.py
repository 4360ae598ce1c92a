"""What `heal_swin.engine.retain_freed_memory` does to resident memory: one JSON line per mode.

    python bench/bench_memory.py

Each mode (none, small, all) runs in a fresh process: after torch's own first-use allocations it
allocates, touches and frees float32 tensors of 16 MiB and 64 MiB, and reports how many MiB stay
resident (RSS from /proc/self/statm) afterwards: freed blocks malloc kept for reuse. Linux only.
The deterministic part (which blocks malloc maps, which it serves from its heap) is a test:
tests/test_engine.py::test_retain_freed_memory_serves_blocks_from_the_heap.
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = """
import os, sys, torch
from heal_swin.engine import retain_freed_memory
mode = sys.argv[1]
if mode != "none":
    assert retain_freed_memory(large=mode == "all")
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
torch.ones(1 << 16).sum()  # torch's own first-use allocations, before measuring
before = rss()
for numel in (4 << 20, 16 << 20):  # 16 MiB and 64 MiB of float32, each touched and freed
    x = torch.ones(numel)
    del x
print((rss() - before) / 2**20)
"""


def main() -> None:
    for mode in ("none", "small", "all"):
        out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
        print(json.dumps({"retain_memory": mode, "resident_after_free_mib": round(float(out.stdout), 1),
                          "freed_mib": 80}))


if __name__ == "__main__":
    main()
