"""load_checkpoint explains an unreadable file in one line (torch's own messages run over many)."""
import pytest
import torch

from shared import CheckpointError, load_checkpoint


@pytest.mark.parametrize("name, content, reason", [
    ("empty.pth", b"", "the file is empty"),
    ("notes.txt", b"101\n", "not a PyTorch checkpoint of tensors and plain values"),
    ("truncated.pth", None, "the file is truncated"),
])
def test_unreadable_checkpoint_is_one_line_with_its_reason(tmp_path, name, content, reason):
    if content is None:
        torch.save({"model": {"w": torch.ones(4096)}}, tmp_path / "full.pth")
        full = (tmp_path / "full.pth").read_bytes()
        content = full[: len(full) // 2]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / name)
    message = str(err.value)
    assert message.startswith(f"cannot read checkpoint {tmp_path / name}: ") and reason in message
    assert "\n" not in message
