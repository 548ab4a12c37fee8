"""Peak memory of a block of code: CUDA's allocator statistics, or the process's sampled RSS on CPU.

    with PeakMemory(device) as peak:
        export()
    peak.result()   # {"peak_memory_mb": 412.3, "memory_measure": "cpu_rss_delta"}

* CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (tensors only, not the
  caching allocator's reserve).
* CPU: the resident set size (from /proc/self/statm) sampled every `interval` seconds by a
  background thread, minus the RSS at entry. Torch's CPU tensors do not go through Python's
  allocator, so tracemalloc would miss them; `ru_maxrss` is a whole-process high-water mark, which
  a second measurement in the same process cannot reset. Sampling can miss a peak shorter than the
  interval; where /proc is missing (macOS) it falls back to the ru_maxrss increase. At entry,
  glibc's `malloc_trim(0)` hands memory freed by earlier work back to the system, so a second
  measurement in the same process sees its own allocations grow the RSS instead of reusing freed
  pages unseen (without it, later methods in `cam_methods` measured 2-7 MiB instead of ~80).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import threading
from pathlib import Path

import torch

STATM = Path("/proc/self/statm")


def release_free_memory() -> None:
    """Collect garbage and return free heap pages to the system (glibc `malloc_trim`; no-op elsewhere)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def current_rss_bytes() -> int | None:
    """The process's resident set size now, or None where /proc is not available."""
    try:
        return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Context manager measuring peak memory (see the module docstring); `result()` after exit."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.kind = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_max_allocated_delta"
            return self
        release_free_memory()
        start = current_rss_bytes()
        if start is None:
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.kind = "cpu_maxrss_delta"
            return self
        self._start, self.peak_bytes, self.kind = start, start, "cpu_rss_delta"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes() or 0)

    def __exit__(self, *exc: object) -> None:
        if self.kind.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes() or 0)
        else:
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def result(self) -> dict[str, float | str]:
        """{"peak_memory_mb": peak minus the amount at entry, in MiB (>= 0), "memory_measure": how}."""
        return {"peak_memory_mb": round(max(self.peak_bytes - self._start, 0) / 2**20, 1), "memory_measure": self.kind}
