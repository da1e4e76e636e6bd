"""Run directories and output paths: one owner per run directory, and paths checked before any work.

- `run_dir_lock(run_dir)`: an exclusive OS lock (fcntl.flock) on RUN/.lock held for the life of a
  command that writes RUN (`mcd train`, `mcd distill`, `mcd bench-distill`).  A second process on
  the same RUN fails at once with `RunDirBusy`, naming the holder (pid, host, command, start time
  written into the lock file).  The OS releases a flock when its holder exits in any way (normal
  exit, exception, SIGKILL, crash), so a lock file left behind by a dead process is stale by
  construction and the next process simply takes it: no pid probing, no manual cleanup.  (flock is
  per host: two machines sharing RUN over NFS are not excluded from each other.)
- `check_output_path(path, kind, name)`: ValueError naming the argument when an output directory or
  file cannot be written (a file where a directory is wanted or the reverse, an unwritable parent),
  so a command fails before its minutes of work instead of after.
- `check_checkpoint_present(run_dir)`: ValueError naming --ckpt when a run directory holds no checkpoint file.
- `cache_dir()`: where downloads and derived files are cached ($LATENT_SHADOWS_CACHE or ~/.cache/latent-shadows).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .names import CHECKPOINT_FILE, CONFIG_FILE

LOCK_FILE = ".lock"


class RunDirBusy(ValueError):
    """The run directory is owned by another live process."""


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "?"


@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold RUN/.lock exclusively for the `with` block (RUN is created if needed); RunDirBusy when another
    process holds it.  When the block fails and RUN was created here and holds nothing but the lock, RUN
    is removed again (a refused or failed start leaves no empty run directory)."""
    run = Path(run_dir)
    check_output_path(run, kind="dir", name="out")
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    lock_path = run / LOCK_FILE
    fd = _open_no_follow(lock_path, os.O_RDWR | os.O_CREAT, name="the run directory's lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirBusy(f"run directory {str(run)!r} is in use by {holder}; wait for it to finish or choose another --out") from None
        raise
    # we own the lock: a previous holder's text (if any) is stale
    os.ftruncate(fd, 0)
    info = f"pid {os.getpid()} on host {socket.gethostname()} (command: {command or _command_line()}; since {time.strftime('%Y-%m-%d %H:%M:%S')})"
    os.pwrite(fd, info.encode() + b"\n", 0)
    _remove_stale_temporaries(run)
    failed = False
    try:
        yield run
    except BaseException:
        failed = True
        raise
    finally:
        if failed and created and {p.name for p in run.iterdir()} <= {LOCK_FILE}:
            lock_path.unlink(missing_ok=True)
            run.rmdir()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _open_no_follow(path: Path, flags: int, name: str) -> int:
    """os.open(path, flags | O_NOFOLLOW): a symlink at `path` is refused by name, never followed (a link
    planted at RUN/.lock must not make the lock's text overwrite the file it points to)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{name} {str(path)!r} is a symbolic link; remove it (it is not followed)") from None
        raise


def _remove_stale_temporaries(run: Path) -> None:
    """Delete the RUN/.checkpoint.safetensors.*.tmp and RUN/.config.json.*.tmp files that atomic writes of a
    process killed mid-write leave behind (only their writer, the lock's previous holder, used them)."""
    for name in (CHECKPOINT_FILE, CONFIG_FILE):
        for stale in run.glob(f".{name}.*.tmp"):
            if stale.is_symlink() or stale.is_file():  # never a directory of that name
                stale.unlink(missing_ok=True)


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe_writable(directory: Path) -> bool:
    """True when a file can be created in `directory` (a real probe: os.access says yes to root on read-only mounts)."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_output_path(path: str | os.PathLike, kind: str = "dir", name: str = "--out", overwrite: bool = True) -> Path:
    """`path` as a Path after checking that it can be written as a directory (kind="dir") or a file
    (kind="file"), and, with overwrite=False, that no file is there yet (a report is never replaced unasked);
    ValueError naming `name` otherwise.  Nothing is created."""
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    target = Path(path)
    if kind == "dir" and target.exists() and not target.is_dir():
        raise ValueError(f"{name}={str(target)!r} is an existing file, not a directory")
    if kind == "file" and target.is_dir():
        raise ValueError(f"{name}={str(target)!r} is a directory; give a file name")
    if kind == "file" and target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"{name}={str(target)!r} exists and is not writable")
    if kind == "file" and target.exists() and not overwrite:
        raise ValueError(f"{name}={str(target)!r} exists; pass --overwrite to replace it, or choose another {name}")
    base = _nearest_existing(target if kind == "dir" else target.parent)
    if not base.is_dir():
        raise ValueError(f"{name}={str(target)!r} cannot be created: {str(base)!r} is a file, not a directory")
    if not _probe_writable(base):
        raise ValueError(f"{name}={str(target)!r} cannot be written: directory {str(base)!r} is not writable")
    return target


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """RUN/checkpoint.safetensors; a path that already names a .safetensors file is kept."""
    path = Path(run_dir)
    return path if path.suffix == ".safetensors" else path / CHECKPOINT_FILE


def check_checkpoint_present(run_dir: str | os.PathLike, name: str = "--ckpt") -> Path:
    """The checkpoint file of `run_dir` (checkpoint_path); ValueError naming `name` when there is none.  Nothing is
    read: the command line checks this before torch loads, and the loader checks the file itself."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise ValueError(f"{name}={str(run_dir)!r}: no checkpoint at {str(path)!r} (expected a run directory holding "
                         f"{CHECKPOINT_FILE}, or that file)")
    return path


def cache_dir() -> Path:
    """The cache directory: $LATENT_SHADOWS_CACHE, else ~/.cache/latent-shadows; ValueError naming
    LATENT_SHADOWS_CACHE when that path (or a folder above it) is a file."""
    root = os.environ.get("LATENT_SHADOWS_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "latent-shadows"
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                label = f"LATENT_SHADOWS_CACHE={str(path)!r}" if root else f"the cache directory {str(path)!r}"
                what = "is a file" if folder == path else f"cannot be a directory: {str(folder)!r} is a file"
                raise ValueError(f"{label} {what}; point LATENT_SHADOWS_CACHE at a directory")
            break
    return path


__all__ = ["LOCK_FILE", "RunDirBusy", "run_dir_lock", "check_output_path", "checkpoint_path", "check_checkpoint_present", "cache_dir"]
