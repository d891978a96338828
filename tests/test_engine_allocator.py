"""The heap policy of dsu.engine.allocator: freed tensors are reused, and handed back after.

Each case runs in a fresh interpreter: the policy is process-wide and sticks once set.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the policy applies to glibc's malloc only"
)

PROBE = """
import json, resource, sys
import torch
from dsu.engine.allocator import keep_freed_memory, release_free_memory

tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

for _ in range(10):  # let the heap reach its steady size
    torch.empty(1 << 24).fill_(1.0)
before = faults()
for _ in range(20):
    torch.empty(1 << 24).fill_(1.0)  # 64 MB, allocated and freed, like a chunk's activations
refaults = faults() - before
held = rss_mb()
release_free_memory()
print(json.dumps({"tuned": tuned, "refaults": refaults, "held": held, "after": rss_mb()}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, tuned = probe("default"), probe("tuned")
    assert tuned["tuned"] is True
    # 20 x 64 MB is 327,680 pages: glibc's default maps and faults every one of them.
    assert default["refaults"] > 200_000
    assert tuned["refaults"] < default["refaults"] / 20


def test_release_hands_the_kept_memory_back() -> None:
    tuned = probe("tuned")
    assert tuned["held"] - tuned["after"] > 40  # the 64 MB block kept for reuse is returned
