"""The run-directory contract: where every artifact lives, when a stage is up to date, and how its
outputs replace the previous ones without ever losing them.

```
outputs/<run.name>/<stage>[/<method>]/   the finished outputs: ..., config.json, inputs.json, DONE
                   <stage>[/<method>].next/   a run in progress (or interrupted) with a changed config
                   <stage>[/<method>].prev/   the outputs it replaced (run.keep_previous)
                   <stage>[/<method>].lock/   one file per process writing the stage: <host>.<pid>.json
```

`RunDir.begin(final, slice, force)` decides, from the files alone, what a stage call does:

1. a `.next` folder that holds a DONE (its swap was interrupted) is swapped in first;
2. `final` finished with the same config slice and upstream fingerprints, and every file of its
   manifest present with its size: up to date, nothing runs (unless `force`);
3. the same, but files of the manifest are missing or changed: the stage resumes *in place*, and
   (since per-image stages skip only files that still load) redoes only what is missing;
4. `final` unfinished with the same key (an interrupted run): resume in place;
5. anything else (another config, other inputs, `force`): the stage writes into `<final>.next/`
   (resumed when it was started with the same key) and `finish` swaps it in with two renames; the
   old finished folder is kept as `<final>.prev/`. A crashed or invalid run leaves `final` as it was.

DONE records the config key and a manifest (relative name -> size of every file). Locks make two
runs of different configs on one stage folder fail with one line; processes of the same config
(shards, torchrun ranks) cooperate. Every decision is taken under a short mutex, so shards that start
together agree.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recam.config import RunConfig
from recam.engine.distributed import barrier, is_main
from recam.errors import RecamInputError
from recam.io import fingerprint, pid_alive, read_json, remove_stale_temporaries, write_json, write_text

log = logging.getLogger(__name__)

NEXT, PREV, LOCK = ".next", ".prev", ".lock"
# Not part of a manifest: the markers themselves, files that change after DONE by design, and the
# resume state and training curves (deleting checkpoints/ to save disk must not make a finished
# training stage out of date).
UNLISTED = {"DONE", "started.json", "summary_entry.json"}
UNLISTED_DIRS = {"checkpoints", "tb"}
SUMMARY_ENTRY = "summary_entry.json"
# The config key that names a stage's sub-folder, where it is not `<stage>.method`.
METHOD_KEYS = {"seg": "labels", "eval_seg": "labels"}
_HOST = socket.gethostname().replace(".", "-")


def config_slice(cfg: Any, *sections: str) -> dict:
    """The parts of the config a stage depends on, as plain JSON-able data (`"cam"`, `"runtime.seed"`)."""
    out = {}
    for name in sections:
        value: Any = cfg
        for part in name.split("."):
            value = getattr(value, part)
        out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def stage_key(config_slice: dict, inputs: dict) -> str:
    """Hash of a stage's config slice and its upstream DONE fingerprints (not their paths, so a
    copied or moved run directory keeps its keys)."""
    blob = json.dumps({"config": config_slice, "inputs": sorted(inputs.values())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_side_folder(path: Path) -> bool:
    """`.next`, `.prev` and `.lock` siblings are not stage outputs (globs over stage folders skip them)."""
    return path.name.endswith((NEXT, PREV, LOCK))


def finished_folders(parent: Path) -> list[Path]:
    """The finished method folders under a stage folder (`seeds/cam`, `seeds/recam`), sorted."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and not is_side_folder(p) and read_done(p) is not None)


@functools.cache
def environment() -> dict[str, Any]:
    """What produced a stage's files, written into DONE (not into the key): library versions, the CPU
    model, the thread count and the GPU. Results differ by about a point across CPUs (other kernels,
    other float order); two DONE files tell whether two runs can be compared digit for digit."""
    import numpy
    import PIL
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def build_manifest(folder: Path) -> dict[str, int]:
    """{relative path: size in bytes} of every file under `folder` but the markers, temporaries,
    checkpoints/ and tb/."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (
            path.is_file()
            and path.name not in UNLISTED
            and not path.name.endswith(".tmp")
            and not UNLISTED_DIRS.intersection(relative.parts[:-1])
        ):
            manifest[relative.as_posix()] = path.stat().st_size
    return manifest


def manifest_problems(folder: Path, manifest: dict[str, int]) -> list[str]:
    """Names of the manifest that are missing under `folder` or have another size now."""
    problems = []
    for name, size in manifest.items():
        try:
            if (folder / name).stat().st_size != size:
                problems.append(name)
        except FileNotFoundError:
            problems.append(name)
    return problems


def read_done(folder: Path) -> dict | None:
    """The DONE record of `folder`, or None when there is none or it is damaged (not JSON, no key):
    a damaged DONE means the folder cannot be trusted, so it counts as unfinished."""
    path = folder / "DONE"
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("%s is damaged (not a JSON record): the folder counts as unfinished", path)
        return None
    return done if isinstance(done, dict) and "key" in done else None


def _read_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("key")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


def is_up_to_date(path: Path, config_slice: dict, inputs: dict) -> bool:
    """DONE exists, was made from this config slice and these upstream fingerprints, and every file
    of its manifest is still there with its size."""
    done = read_done(path)
    if done is None or done["key"] != stage_key(config_slice, inputs):
        return False
    return not manifest_problems(path, done.get("manifest", {}))


class _Mutex:
    """A short exclusive section between processes (os.mkdir is atomic on POSIX and NFS)."""

    def __init__(self, path: Path, timeout_s: float = 60.0):
        self.path, self.timeout_s = path, timeout_s

    def __enter__(self) -> "_Mutex":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.time() + self.timeout_s
        while True:
            try:
                self.path.mkdir()
                return self
            except FileExistsError:
                if time.time() - _mtime(self.path) > self.timeout_s:  # its holder died inside the section
                    shutil.rmtree(self.path, ignore_errors=True)
                elif time.time() > deadline:
                    raise RecamInputError(
                        f"recam: {self.path} is held for over {self.timeout_s:.0f} s - "
                        "remove it if no other recam process runs"
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _sibling(final: Path, suffix: str) -> Path:
    return final.with_name(final.name + suffix)


@dataclass
class RunDir:
    """Paths of one experiment's artifacts (`<root>/<name>/<stage>[/<method>]`) and the stage life
    cycle: `require` the upstream stages, `begin`, write under the folder `begin` returns, `finish`.

    Every stage asks this object for its own folder and for its inputs; nothing else builds these
    paths. `run.inputs` redirects an upstream stage to another folder, e.g. to share one `cam`
    checkpoint across a sweep. `require()` records each upstream DONE fingerprint, which `finish()`
    writes as `inputs.json`.
    """

    run: RunConfig
    used_inputs: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)  # one RunDir per stage call: its start time
    _finals: dict[Path, Path] = field(default_factory=dict)  # work folder -> final folder
    _locks: list[Path] = field(default_factory=list)
    _last_finished: Path | None = None

    @property
    def root(self) -> Path:
        return Path(self.run.root) / self.run.name

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    def stage_dir(self, stage: str, method: str | None = None) -> Path:
        base = Path(self.run.inputs[stage]) if stage in self.run.inputs else self.root / stage
        return base / method if method else base

    def require(self, stage: str, method: str | None = None) -> Path:
        """The folder of a finished upstream stage, or one clear error naming the stage to run."""
        path = self.stage_dir(stage, method)
        what = f"stage={stage}" + (f" {stage}.{METHOD_KEYS.get(stage, 'method')}={method}" if method else "")
        done = read_done(path)
        if done is None:
            state = "has a damaged DONE file" if (path / "DONE").is_file() else "is not finished (no DONE file)"
            raise RecamInputError(
                f"recam: {path} {state} - run `{what}` for experiment run.name={self.run.name} first "
                f"(make {stage} EXP=...)"
            )
        if problems := manifest_problems(path, done.get("manifest", {})):
            raise RecamInputError(
                f"recam: {path} changed after it finished ({len(problems)} files missing or changed, e.g. "
                f"{problems[0]}) - re-run `{what}`, which redoes only those"
            )
        self.used_inputs[str(path / "DONE")] = fingerprint(path / "DONE")
        return path

    @staticmethod
    def is_done(path: Path) -> bool:
        return read_done(path) is not None

    def begin(self, final: Path, config_slice: dict, force: bool = False) -> tuple[Path, dict | None]:
        """(folder to write into, None), or (final, earlier results) when the stage is up to date.

        Call it after every `require` (the key covers the upstream fingerprints). See the module
        docstring for the cases. Under torchrun every rank decides the same from the same files;
        rank 0 alone clears and writes, then all ranks meet.
        """
        key = stage_key(config_slice, self.used_inputs)
        try:
            return self._begin(final, config_slice, force, key)
        except PermissionError as err:
            raise RecamInputError(
                f"recam: cannot write in {final.parent} ({err.strerror}) - make the outputs folder "
                "writable or set run.root to one that is; nothing was changed"
            ) from err

    def _begin(self, final: Path, config_slice: dict, force: bool, key: str) -> tuple[Path, dict | None]:
        self._lock(final, key)
        staging = _sibling(final, NEXT)
        with _Mutex(_sibling(final, LOCK) / ".mutex"):
            if read_done(staging) is not None and is_main():
                self._swap(staging, final)
            done = read_done(final)
            if not force and done is not None and done["key"] == key:
                problems = manifest_problems(final, done.get("manifest", {}))
                if not problems:
                    log.info("%s is up to date (same config and inputs) - skipping; run.force=true re-runs it", final)
                    return final, (read_json(final / "results.json") if (final / "results.json").is_file() else {})
                log.warning(
                    "%s: %d files changed or went missing after it finished (e.g. %s) - redoing only those",
                    final,
                    len(problems),
                    problems[0],
                )
                if is_main():
                    (final / "DONE").unlink()
                    write_json(final / "started.json", {"key": key, "config": config_slice, "inputs": self.used_inputs})
                work = final
            elif not force and done is None and _read_key(final / "started.json") == key:
                work = final  # an interrupted run of this config: resume where it stopped
            else:
                work = staging
                if is_main() and staging.is_dir() and (force or _read_key(staging / "started.json") != key):
                    log.info("%s holds an unfinished run of another config - removing it", staging)
                    shutil.rmtree(staging)
                if is_main() and not (staging / "started.json").is_file():
                    write_json(
                        staging / "started.json", {"key": key, "config": config_slice, "inputs": self.used_inputs}
                    )
            if is_main() and (stale := remove_stale_temporaries(work)):
                log.info("%s: removed %d partial files of a killed run", work, stale)
        barrier()
        if work == staging and final.is_dir():
            log.info("%s: writing into %s; the finished outputs stay until it completes", final, staging.name)
        self._finals[work] = final
        return work, None

    def final_dir(self, work: Path) -> Path:
        """The folder `work` becomes when its stage finishes."""
        return self._finals.get(work, work)

    def finish(
        self,
        path: Path,
        config_slice: dict,
        results: dict | None = None,
        table: str | None = None,
        summary: dict[str, dict] | None = None,
    ) -> Path:
        """Write config.json, inputs.json, results.{json,md}, the summary entries, then DONE (last, with
        the manifest), and swap a staging folder in. Returns the final folder. Under torchrun only
        rank 0 writes."""
        final = self.final_dir(path)
        if not is_main():
            return final
        write_json(path / "config.json", config_slice)
        write_json(path / "inputs.json", self.used_inputs)
        if results is not None:
            write_json(path / "results.json", results)
        if table is not None:
            write_text(path / "results.md", table)
        if summary:
            write_json(path / SUMMARY_ENTRY, summary)
        write_json(
            path / "DONE",
            {
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "seconds": round(time.time() - self.created, 1),
                "key": stage_key(config_slice, self.used_inputs),
                "manifest": build_manifest(path),
                "environment": environment(),
            },
        )
        (path / "started.json").unlink(missing_ok=True)
        if path != final:
            with _Mutex(_sibling(final, LOCK) / ".mutex"):
                if path.is_dir():
                    self._swap(path, final)
        self._last_finished = final
        if summary:
            self.rebuild_summary()
        self._unlock(final)
        return final

    def _swap(self, staging: Path, final: Path) -> None:
        """final -> final.prev (if it was finished; an unfinished one is dropped), staging -> final."""
        previous = _sibling(final, PREV)
        if final.is_dir():
            if read_done(final) is not None:
                shutil.rmtree(previous, ignore_errors=True)
                os.replace(final, previous)
            else:
                shutil.rmtree(final)
        os.replace(staging, final)
        if not self.run.keep_previous:
            shutil.rmtree(previous, ignore_errors=True)

    def add_summary(self, key: str, entry: dict) -> None:
        """Add `<eval stage>/<method>` -> {miou, threshold, ...} to the experiment's summary.json (also
        kept in the last finished folder, so summary.json can be rebuilt). Prefer `finish(summary=)`."""
        if not is_main():
            return
        if self._last_finished is not None and self._last_finished.is_dir():
            path = self._last_finished / SUMMARY_ENTRY
            entries = read_json(path) if path.is_file() else {}
            write_json(path, {**entries, key: entry})
        self.rebuild_summary({key: entry})

    def rebuild_summary(self, extra: dict | None = None) -> dict:
        """summary.json = its readable entries, updated by every finished stage folder's summary entry
        (and `extra`). A missing or damaged summary.json is rebuilt from the stage folders."""
        if not is_main():
            return {}
        summary: dict = {}
        if self.summary_path.is_file():
            try:
                data = json.loads(self.summary_path.read_text(encoding="utf-8"))
                summary = data if isinstance(data, dict) else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("%s is damaged - rebuilding it from the stage folders", self.summary_path)
        for entry in sorted(self.root.glob(f"*/{SUMMARY_ENTRY}")) + sorted(self.root.glob(f"*/*/{SUMMARY_ENTRY}")):
            folder = entry.parent
            if any(is_side_folder(p) for p in (folder, folder.parent)) or read_done(folder) is None:
                continue
            try:
                summary.update(json.loads(entry.read_text(encoding="utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("%s is damaged - re-run its stage to restore its summary entry", entry)
        summary.update(extra or {})
        if summary:
            write_json(self.summary_path, summary)
        return summary

    def _lock(self, final: Path, key: str) -> None:
        """Register this process as a writer of `final`; fail (or wait, run.lock_wait_s) while a live
        process of another config writes it. Locks of dead local processes are stale and removed."""
        folder = _sibling(final, LOCK)
        mine = folder / f"{_HOST}.{os.getpid()}.json"
        deadline = time.time() + self.run.lock_wait_s
        while True:
            with _Mutex(folder / ".mutex"):
                other = _live_other_writer(folder, key, self.run.lock_stale_s)
                if other is None:
                    write_json(
                        mine,
                        {"key": key, "host": _HOST, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")},
                    )
                    if mine not in self._locks:
                        self._locks.append(mine)
                    return
            if time.time() >= deadline:
                raise RecamInputError(
                    f"recam: {final} is being written by another run with another config (host {other.get('host')}, "
                    f"pid {other.get('pid')}, since {other.get('since')}) - wait for it to finish, stop it, or use "
                    "another run.name (run.lock_wait_s=<seconds> waits)"
                )
            time.sleep(min(1.0, max(deadline - time.time(), 0.01)))

    def _unlock(self, final: Path) -> None:
        folder = _sibling(final, LOCK)
        mine = folder / f"{_HOST}.{os.getpid()}.json"
        mine.unlink(missing_ok=True)
        if mine in self._locks:
            self._locks.remove(mine)
        try:
            folder.rmdir()
        except OSError:  # other writers, or their mutex, are still there
            pass

    def close(self) -> None:
        """Release every lock this process still holds (a stage that stopped early, a shard)."""
        for mine in list(self._locks):
            self._unlock(mine.parent.with_name(mine.parent.name[: -len(LOCK)]))


def _live_other_writer(folder: Path, key: str, stale_s: float) -> dict | None:
    """The record of a live writer of `folder`'s stage with another key, removing stale records."""
    for owner in sorted(folder.glob("*.json")):
        try:
            record = json.loads(owner.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            owner.unlink(missing_ok=True)
            continue
        host, pid = record.get("host"), int(record.get("pid", -1))
        if host == _HOST and pid == os.getpid():
            continue
        dead = not pid_alive(pid) if host == _HOST else time.time() - _mtime(owner) > stale_s
        if dead:
            log.info("removing the stale lock of %s (process gone)", owner.name)
            owner.unlink(missing_ok=True)
        elif record.get("key") != key:
            return record
    return None
