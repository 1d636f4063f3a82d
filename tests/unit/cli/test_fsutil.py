"""atomic_write changes a file's contents and nothing else (links, mode, hard links, devices and
pipes stay what they were); read_utf8 keeps the bytes' newlines and names the line of a bad byte."""
import os
import stat
import threading

import pytest

from trtx.cli.errors import UserError
from trtx.cli.fsutil import atomic_write, read_utf8


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_symlink_stays_a_link(tmp_path):
    (tmp_path / "real.txt").write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to("real.txt")
    atomic_write(link, "new\r\n")
    assert link.is_symlink() and os.readlink(link) == "real.txt"
    assert (tmp_path / "real.txt").read_bytes() == b"new\r\n"
    assert _names(tmp_path) == ["link.txt", "real.txt"]                 # no temporary file left


@pytest.mark.parametrize("mode", [0o600, 0o755, 0o640])
def test_the_mode_is_kept(tmp_path, mode):
    path = tmp_path / "f"
    path.write_text("old")
    os.chmod(path, mode)
    atomic_write(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_bytes() == b"new"


def test_a_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640


def test_hard_links_see_the_edit(tmp_path):
    (tmp_path / "a").write_text("old")
    os.link(tmp_path / "a", tmp_path / "b")
    atomic_write(tmp_path / "a", "new")
    assert (tmp_path / "b").read_text() == "new" and (tmp_path / "a").stat().st_nlink == 2


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write(fifo, b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert _names(tmp_path) == ["pipe"]


def test_a_dev_path_is_written_through_its_descriptor():
    read_end, write_end = os.pipe()
    try:
        atomic_write(f"/dev/fd/{write_end}", "via /dev/fd")
        assert os.read(read_end, 100) == b"via /dev/fd"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_character_device_is_written_in_place(tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))       # what /dev/null is, in a safe place
    except PermissionError:
        pytest.skip("no permission to make a device node here")
    before = os.stat(null)
    atomic_write(null, "discarded")
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino and _names(tmp_path) == ["null"]


def test_dash_is_standard_output(capfd):
    atomic_write("-", "to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"


def test_read_utf8_keeps_newlines_and_names_the_bad_line(tmp_path):
    (tmp_path / "ok").write_bytes(b"a\r\nb\n")
    assert read_utf8(tmp_path / "ok") == "a\r\nb\n"
    (tmp_path / "bad").write_bytes(b"a\nb\n\xff\xfe\n")
    with pytest.raises(UserError) as err:
        read_utf8(tmp_path / "bad")
    assert (err.value.line, err.value.path) == (3, str(tmp_path / "bad")) and "0xff" in err.value.message
