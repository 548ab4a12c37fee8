"""PeakMemory: the CPU measure sees a block's own allocations, also for a second block in one process."""

from __future__ import annotations

import time

import torch

from recam.engine.memory import PeakMemory


def test_peak_rss_delta_sees_each_blocks_allocation() -> None:
    cpu = torch.device("cpu")
    for megabytes in (80, 40):
        with PeakMemory(cpu) as peak:
            block = torch.ones(megabytes * 2**20 // 4)  # float32
            block.add_(1)
            time.sleep(0.1)  # stay alive for many 5 ms samples: a loaded machine delays the sampler thread
            del block
        result = peak.result()
        assert result["memory_measure"] == "cpu_rss_delta"
        assert 0.8 * megabytes <= result["peak_memory_mb"] <= megabytes + 60
