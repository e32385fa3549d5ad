"""The one atomic writer: the target holds the old file or the new one, never half of one."""

import pytest

from nnunet_multimodal.atomic_files import atomic_path, write_text_atomic


def test_the_new_text_replaces_the_old(tmp_path):
    write_text_atomic(tmp_path / "a.json", "old")
    write_text_atomic(tmp_path / "a.json", "new")
    assert (tmp_path / "a.json").read_text() == "new"


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    write_text_atomic(tmp_path / "a.json", "old")
    with pytest.raises(OSError, match="disk full"), atomic_path(tmp_path / "a.json") as temporary:
        temporary.write_text("half")
        raise OSError("disk full")
    assert (tmp_path / "a.json").read_text() == "old"


def test_an_error_while_writing_leaves_no_temporary_file(tmp_path):
    with pytest.raises(OSError, match="disk full"), atomic_path(tmp_path / "a.json") as temporary:
        temporary.write_text("half")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_file_keeps_the_targets_extension(tmp_path):
    with atomic_path(tmp_path / "case_001.nii.gz") as temporary:
        temporary.write_bytes(b"")
    assert temporary.name.endswith(".nii.gz")


def test_the_temporary_file_is_hidden_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "a.json") as temporary:
        temporary.write_text("x")
    assert (temporary.parent, temporary.name[0]) == (tmp_path, ".")


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    (tmp_path / ".a.json.0badc0de.partial.json").write_text("left behind by SIGKILL before the rename")
    write_text_atomic(tmp_path / "a.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_temporary_files_of_other_targets_are_left_alone(tmp_path):
    (tmp_path / ".b.json.0badc0de.partial.json").write_text("another writer's, possibly still writing")
    write_text_atomic(tmp_path / "a.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.json.0badc0de.partial.json", "a.json"]


def test_durable_writes_replace_the_target_too(tmp_path):
    with atomic_path(tmp_path / "checkpoint.pth", durable=True) as temporary:
        temporary.write_bytes(b"weights")
    assert (tmp_path / "checkpoint.pth").read_bytes() == b"weights"
