"""Reading text files with one-line errors, and writing files so that a reader, or a crash, never
sees half of one and nothing but the file's contents changes: a link stays a link, a file keeps
its mode, and a device or a pipe (such as /dev/stdout) is written to, never replaced."""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from .errors import UserError


def read_utf8(path: str | Path) -> str:
    """The file's text, UTF-8 decoded with its newlines untouched (CRLF stays CRLF). A file that
    is not UTF-8 (a binary, a Latin-1 export) is one UserError naming the line of the first bad byte."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise UserError("is a folder, not a file", str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text (byte 0x{data[e.start]:02x}); is this a binary file?",
                        str(path), data.count(b"\n", 0, e.start) + 1) from None


def _umask() -> int:
    # /proc first: setting the umask to read it back is a race with threads creating files.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text is UTF-8 encoded, newlines as given) to `path`:
      - `-` writes to standard output;
      - a path that exists and is not a regular file (a character device, a pipe), or any path
        under /dev or /proc (/dev/stdout), is opened and written in place, never renamed over;
      - a file with other hard links is written in place too, so that every link sees the edit;
      - a symlink is followed: its target is replaced, the link stays;
      - a regular file (or a new one) is replaced atomically: a temporary file beside the target,
        given the old file's mode (a new file gets 0666 less the umask), synced, renamed over it."""
    raw = data.encode() if isinstance(data, str) else data
    if str(path) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return
    path = Path(path)
    try:
        st = os.stat(path)                      # follows links
    except FileNotFoundError:
        st = None
    # /dev/stdout on a redirected shell resolves to the user's file: write through the descriptor.
    special = path.is_absolute() and len(path.parts) > 1 and path.parts[1] in ("dev", "proc")
    if st is not None and (not stat.S_ISREG(st.st_mode) or special or st.st_nlink > 1):
        with open(path, "wb") as f:
            f.write(raw)
        return
    target = Path(os.path.realpath(path))
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())                # else a crash after the rename can leave it empty
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
