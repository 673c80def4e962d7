"""The one atomic write: a finished file or the old one, never half of one, with the permissions the umask gives."""

import os

import pytest

from workbench.files import atomic_write, umask_mode


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_new_file_replaces_the_old_with_the_permissions_open_would_give(tmp_path, umask_022):
    path = tmp_path / "config.json"
    path.write_text("old")
    assert atomic_write(path, lambda tmp: tmp.write_text("new")) == path
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == umask_mode() == 0o644  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_writer_that_makes_the_file_anew_still_gets_the_umasks_permissions(tmp_path, umask_022):
    def recreate(tmp):  # what a compiler's -o or a library's save does: unlink, then create with its own mode
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"\x7fELF")
        os.close(fd)

    atomic_write(tmp_path / "lib.so", recreate)
    assert (tmp_path / "lib.so").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "latest"
    path.write_text("ckpt-000004")

    def half_then_fail(tmp):
        tmp.write_text("ckpt-0")
        raise KeyboardInterrupt  # a Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "ckpt-000004"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
