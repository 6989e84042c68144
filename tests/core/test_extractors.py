"""open_clip extractors: registered small towers, local weights files, and clear errors."""

from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch

from slerir_core.config import ExtractorConfig, load_config
from slerir_core.errors import ExtractorError
from slerir_core.model import SLERIR
from slerir_core.model.extractors import ClipImageEncoder, DaClipEncoder, crops, windows


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


def write_daclip_checkpoint(path, zero_scale: float) -> dict[str, torch.Tensor]:
    """A DA-CLIP-layout checkpoint for the tiny architecture, as DA-CLIP's training saves it."""
    torch.manual_seed(3)
    clip = open_clip.create_model("slerir-vit-tiny")
    control = open_clip.create_model("slerir-vit-tiny").visual
    state = {f"clip.{k}": v for k, v in clip.state_dict().items()}
    for k, v in control.state_dict().items():
        prefix = "visual_control.transformer." if k.startswith("transformer.") else "visual_control."
        state[prefix + k] = v
    width = control.transformer.width
    for i in range(len(control.transformer.resblocks)):
        state[f"visual_control.transformer.zero_modules.{i}.weight"] = zero_scale * torch.randn(width, width)
        state[f"visual_control.transformer.zero_modules.{i}.bias"] = zero_scale * torch.randn(width)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return state


def test_windows_cover_the_image_at_its_own_scale():
    images = torch.rand(2, 3, 100, 150)
    cut, n = windows(images, (32, 32))
    # Four windows down and five across, evenly spaced, the last flush with the edge.
    assert n == 20 and cut.shape == (40, 3, 32, 32)
    assert torch.equal(cut[0], images[0, :, :32, :32]) and torch.equal(cut[1], images[0, :, :32, 30:62])
    assert torch.equal(cut[19], images[0, :, 68:, 118:]) and torch.equal(cut[20], images[1, :, :32, :32])
    # A side no longer than the window is taken whole; an image the window's size is one window, itself.
    cut, n = windows(images[..., :20, :], (32, 32))
    assert n == 5 and cut.shape == (10, 3, 20, 32)
    cut, n = windows(images[..., :32, :32], (32, 32))
    assert n == 1 and torch.equal(cut, images[..., :32, :32])


def test_daclip_checkpoint_loads_and_controller_steers_content(tmp_path):
    path = tmp_path / "daclip.pt"
    state = write_daclip_checkpoint(path, zero_scale=0.5)
    enc = DaClipEncoder(ExtractorConfig("slerir-vit-tiny", pretrained=str(path), kind="daclip"))
    assert torch.equal(enc.tower.conv1.weight, state["clip.visual.conv1.weight"])
    assert torch.equal(
        enc.controller.transformer.resblocks[0].mlp.c_fc.weight,
        state["visual_control.transformer.transformer.resblocks.0.mlp.c_fc.weight"],
    )
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        degradation, _ = enc(x)
        content, tokens = enc.content(x)
        enc.controller.output_tokens = False
        plain_controller = enc.controller(enc.preprocess(x))
        enc.tower.output_tokens = False
        plain_tower = enc.tower(enc.preprocess(x))
    assert torch.allclose(degradation, plain_controller, atol=1e-5)  # degradation = the controller's CLS
    assert not torch.allclose(content, plain_tower, atol=1e-3)  # the controller's states steer the content
    assert tokens.shape == (2, *enc.grid, enc.token_dim)


def test_untrained_daclip_content_is_the_plain_tower():
    enc = DaClipEncoder(ExtractorConfig("slerir-vit-tiny", kind="daclip"))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        content, _ = enc.content(x)
        enc.tower.output_tokens = False
        assert torch.allclose(content, enc.tower(enc.preprocess(x)), atol=1e-6)  # zero-initialised links


def test_daclip_model_shares_one_extractor_and_bad_files_are_clear(tmp_path):
    cfg = load_config("tiny")
    daclip = ExtractorConfig("slerir-vit-tiny", kind="daclip")
    model = SLERIR(dataclasses.replace(cfg, degradation_extractor=daclip, content_extractor=daclip))
    assert model.content_extractor is None and isinstance(model.degradation_extractor, DaClipEncoder)
    with torch.no_grad():
        y, info = model.eval()(torch.rand(1, 3, 24, 24))
    assert y.shape == (1, 3, 24, 24) and info["prior"].shape[0] == 1

    plain = tmp_path / "plain.pt"
    torch.save(open_clip.create_model("slerir-vit-tiny").state_dict(), plain)
    with pytest.raises(ExtractorError, match="not a DA-CLIP checkpoint"):
        DaClipEncoder(ExtractorConfig("slerir-vit-tiny", pretrained=str(plain), kind="daclip"))
    with pytest.raises(ExtractorError, match="does not exist"):
        DaClipEncoder(ExtractorConfig("slerir-vit-tiny", pretrained=str(tmp_path / "no.pt"), kind="daclip"))
