"""open_clip extractors: registered small towers, local weights files, and clear errors."""

from __future__ import annotations

import open_clip
import pytest
import torch

from slerir_core.config import ExtractorConfig
from slerir_core.model.extractors import ClipImageEncoder, ExtractorError, crops


def test_registered_tower_outputs_cls_and_tokens():
    enc = ClipImageEncoder(ExtractorConfig("slerir-vit-tiny"))
    cls, tokens = enc(torch.rand(2, 3, 50, 70))
    assert cls.shape == (2, enc.embed_dim)
    assert tokens.shape == (2, *enc.grid, enc.token_dim)


def test_loads_a_local_clip_checkpoint_the_test_writes(tmp_path):
    torch.manual_seed(1)
    clip = open_clip.create_model("slerir-vit-tiny")
    path = tmp_path / "tiny-clip.pt"
    torch.save(clip.state_dict(), path)
    enc = ClipImageEncoder(ExtractorConfig("slerir-vit-tiny", pretrained=str(path)))
    for name, value in clip.visual.state_dict().items():
        assert torch.equal(enc.tower.state_dict()[name], value), name
    torch.manual_seed(2)
    fresh = ClipImageEncoder(ExtractorConfig("slerir-vit-tiny"))
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(enc(x)[0], fresh(x)[0])


def test_unknown_model_missing_and_corrupt_weights(tmp_path):
    with pytest.raises(ExtractorError, match="unknown open_clip model"):
        ClipImageEncoder(ExtractorConfig("no-such-vit"))
    with pytest.raises(ExtractorError, match=r"does not exist.*nothing is downloaded"):
        ClipImageEncoder(ExtractorConfig("slerir-vit-tiny", pretrained=str(tmp_path / "missing.pt")))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ExtractorError, match="cannot load extractor weights"):
        ClipImageEncoder(ExtractorConfig("slerir-vit-tiny", pretrained=str(bad)))


def test_crops_are_row_major_pieces_of_the_image():
    image = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 3, 4, 4)
    pieces = crops(image, grid=2, size=(2, 2))
    assert pieces.shape == (4, 3, 2, 2)
    assert torch.equal(pieces[1, 0], torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
