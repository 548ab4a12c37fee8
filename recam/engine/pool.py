"""Per-image CPU work over a process pool (the dense-CRF stages), with progress and clear errors.

The reference spawns `num_workers` processes, each taking a strided shard. Here a
`ProcessPoolExecutor` hands out small chunks in order, so the outputs do not depend on the worker
count (each job writes its own file) and a slow image does not hold a whole shard back.
`num_workers=0` runs the jobs in this process (tests, debugging).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from recam.engine.progress import progress

from recam.errors import RecamInputError

Job = TypeVar("Job")

START_METHODS = ("spawn", "forkserver", "fork")


def _worker_init(parent: int) -> None:
    """Pool initializer: one BLAS/OpenMP thread per worker (the workers already fill the cores), and
    the worker dies with its parent: a killed stage leaves no process writing into its folder."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends SIGKILL when the parent exits (prctl PR_SET_PDEATHSIG). Elsewhere, and
    as a backstop for a parent that died before the call, a thread polls the parent's pid."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # no prctl here: the watchdog alone
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def map_jobs(
    fn: Callable[[Job], Any],
    jobs: Sequence[Job],
    *,
    num_workers: int,
    start_method: str = "spawn",
    desc: str = "jobs",
    chunksize: int = 4,
) -> list[Any]:
    """`[fn(job) for job in jobs]`, in order, over `num_workers` processes (0 = in this process).

    fn must be a module-level function (it is pickled by name) and each job picklable.
    An exception in a worker is raised here unchanged (a RecamInputError keeps its one line).
    """
    if start_method not in START_METHODS:
        raise RecamInputError(f"recam: start_method={start_method!r} - use one of {', '.join(START_METHODS)}")
    if num_workers < 0:
        raise RecamInputError(f"recam: num_workers={num_workers} must be >= 0")
    bar = progress(total=len(jobs), desc=desc, unit="img", dynamic_ncols=True)
    results: list[Any] = []
    with bar:
        if num_workers == 0 or len(jobs) <= 1:
            for job in jobs:
                results.append(fn(job))
                bar.update(1)
            return results
        context = multiprocessing.get_context(start_method)
        workers = min(num_workers, len(jobs))
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
        ) as pool:
            for result in pool.map(fn, jobs, chunksize=max(1, min(chunksize, len(jobs) // workers))):
                results.append(result)
                bar.update(1)
    return results
