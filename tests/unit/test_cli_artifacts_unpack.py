"""`parpaing artifacts --out DIR` unpacks only regular files inside DIR: an entry leading
out, or a link already in DIR, stops it without writing outside."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tower.cli.artifacts import unpack
from tower.cli.output import CliError


def tar_gz(*entries: tuple[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o4777
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_files_land_inside_with_safe_modes(tmp_path: Path) -> None:
    assert unpack(tar_gz(("a/b.txt", b"b"), ("c", b"c")), tmp_path / "out") == 2
    assert (tmp_path / "out/a/b.txt").read_bytes() == b"b"
    assert (tmp_path / "out/c").stat().st_mode & 0o7777 == 0o755


def test_an_entry_leading_out_stops_the_unpack(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="outside"):
        unpack(tar_gz(("a/../../escaped", b"x")), tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


def test_a_link_already_in_the_directory_is_not_written_through(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "dir").symlink_to(elsewhere)
    (out / "file").symlink_to(elsewhere / "target")
    with pytest.raises(CliError):
        unpack(tar_gz(("dir/x", b"x")), out)
    with pytest.raises(CliError):
        unpack(tar_gz(("file", b"x")), out)
    assert not list(elsewhere.iterdir())
