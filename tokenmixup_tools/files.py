""" Atomic file writing for the tools

Every file the tools write (checkpoints, summary.csv, args.yaml, result files) goes through
`atomic_path`: it is written under a temporary name in the target's folder, flushed to disk, given
the mode an ordinary new file gets (0o666 less the umask; `tempfile.mkstemp` makes private ones)
and renamed over the target with `os.replace`. Readers therefore see the old file or the whole new
one, never a half-written one, and a killed writer leaves the target untouched.
"""
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ['ordinary_mode', 'atomic_path', 'atomic_open', 'atomic_duplicate', 'replace_folder']

PathLike = Union[str, os.PathLike]


def ordinary_mode(folder: bool = False) -> int:
    """The mode a new file (0o666) or folder (0o777) gets from the process umask."""
    mask = os.umask(0)  # the umask can only be read by setting it
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


@contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """A temporary path next to `path` to write to; on a clean exit it replaces `path`.

    Whatever is at the temporary path when the block ends (written by any writer: `torch.save`,
    `shutil.copy2`, `os.link`, ...) is fsynced, given an ordinary file mode and renamed over
    `path`. If the block raises, the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    os.close(handle)
    try:
        yield tmp_path
        with open(tmp_path, 'rb') as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, ordinary_mode())
        os.replace(tmp_path, path)
    finally:
        if os.path.lexists(tmp_path):
            os.remove(tmp_path)


@contextmanager
def atomic_open(path: PathLike, mode: str = 'w', **open_kwargs) -> Iterator[IO]:
    """`open(path, mode)` for writing, with the file replacing `path` whole when the block ends."""
    if not mode.startswith('w'):
        raise ValueError(f"mode must be a write mode ('w', 'wb', ...), got {mode!r}")
    with atomic_path(path) as tmp_path:
        with open(tmp_path, mode, **open_kwargs) as f:
            yield f


def atomic_duplicate(src: PathLike, dst: PathLike, hard_link: bool = True) -> bool:
    """Make `dst` a copy of `src`, replacing it whole: a hard link where `hard_link` and the file
    system allow one, else a copy. Returns whether a hard link was made."""
    with atomic_path(dst) as tmp_path:
        if hard_link:
            os.remove(tmp_path)  # os.link needs a free name
            try:
                os.link(src, tmp_path)
                return True
            except (OSError, NotImplementedError):
                hard_link = False
        shutil.copy2(src, tmp_path)
    return False


def replace_folder(staged: PathLike, dest: PathLike) -> None:
    """Put the complete folder `staged` at `dest` (replacing what is there), never leaving half of one.

    `staged` gets an ordinary folder mode (`tempfile.mkdtemp` makes private ones). An existing `dest`
    is moved aside first and restored if the move of `staged` fails.
    """
    staged, dest = Path(staged), Path(dest)
    os.chmod(staged, ordinary_mode(folder=True))
    if not os.path.lexists(dest):
        os.replace(staged, dest)
        return
    old = dest.parent / f'.{dest.name}.old-{uuid.uuid4().hex[:8]}'
    os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
