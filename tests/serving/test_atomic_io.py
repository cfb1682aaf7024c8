"""components/atomic_io.py: the project's one atomic write (serving's models.config and promotion log use it)."""

import os

import pytest

from components.atomic_io import atomic_path, atomic_write


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "models.config")
    atomic_write(path, "first")
    atomic_write(path, b"second \xff")
    with open(path, "rb") as f:
        assert f.read() == b"second \xff"
    assert os.listdir(tmp_path) == ["models.config"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    path = str(tmp_path / "models.config")
    atomic_write(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert os.path.basename(tmp).startswith(".models.config.tmp-")
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("writer died")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["models.config"]


def test_concurrent_writers_use_distinct_temp_names(tmp_path):
    path = str(tmp_path / "f")
    with atomic_path(path) as first, atomic_path(path) as second:
        assert first != second
        for tmp, text in ((first, "a"), (second, "b")):
            with open(tmp, "w") as f:
                f.write(text)
    assert open(path).read() == "a" and os.listdir(tmp_path) == ["f"]
