"""Root working in another user's directory does so with that user's rights (``fsowner``)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deskwatch_contract.fsowner import as_owner_of, fs_uid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it acts as another user")


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder the other user can reach (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="deskwatch-fsowner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_within_the_block_the_kernel_judges_as_the_directorys_owner(base: Path) -> None:
    """A link put back between a check and its use gets root nothing: the open, chmod and
    create are judged as the owner's, and what is made is the owner's."""
    nobody = pwd.getpwnam("nobody")
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    roots = base / "roots"
    roots.mkdir(mode=0o755)
    (roots / "file").write_text("")
    (roots / "file").chmod(0o644)
    (state / "link").symlink_to(roots / "file")
    other_thread: list[int] = []
    asked = threading.Event()
    worker = threading.Thread(target=lambda: (asked.wait(10), other_thread.append(fs_uid())))
    worker.start()  # a thread already running, the camera's say
    with as_owner_of(state) as owner:
        assert owner == (nobody.pw_uid, nobody.pw_gid)
        asked.set()
        worker.join()
        with pytest.raises(PermissionError):
            os.chmod(state / "link", 0o600)
        with pytest.raises(PermissionError):
            open(state / "link", "w").close()
        with pytest.raises(PermissionError):
            (roots / "new").write_text("x")
        (state / "made").write_text("x")
        with as_owner_of(state) as inner:  # an enclosing block already switched: nothing changes
            assert inner is None
        assert fs_uid() == nobody.pw_uid
    assert other_thread == [0]  # the process's other threads stay root
    assert fs_uid() == 0
    assert stat.S_IMODE((roots / "file").stat().st_mode) == 0o644 and (roots / "file").read_text() == ""
    assert not (roots / "new").exists()
    made = (state / "made").stat()
    assert (made.st_uid, made.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    (roots / "after").write_text("root again")  # root's rights are back


def test_a_directory_root_owns_or_one_not_there_changes_nothing(base: Path) -> None:
    with as_owner_of(base) as owner:
        assert owner is None and fs_uid() == 0
    with as_owner_of(base / "missing") as owner:
        assert owner is None and fs_uid() == 0
