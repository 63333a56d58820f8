"""Train-time augmentation: every corruption keeps shape and range, and seeds reproduce."""
import pytest
import torch

from engines.train.augment import CORRUPTIONS, MODES, Augmenter, corrupt_fixed


@pytest.fixture()
def crops():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 3, 37, 53), generator=g, dtype=torch.uint8)  # odd sizes


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_changes_the_crop_and_keeps_its_shape(name, crops):
    g = torch.Generator().manual_seed(3)
    img = crops[0].float() / 255
    out = CORRUPTIONS[name](img, g).clamp(0, 1)
    assert out.shape == img.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.equal(out, img)


@pytest.mark.parametrize("mode", MODES)
def test_augmenter_returns_unit_range_floats_and_is_seeded(mode, crops):
    a, b = Augmenter(mode, seed=5), Augmenter(mode, seed=5)
    out = a(crops)
    assert out.shape == crops.shape and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, b(crops))
    if mode == "none":
        assert torch.equal(out, crops.float() / 255)


def test_augmenter_state_round_trip_replays_the_same_draws(crops):
    a = Augmenter("corruptions", seed=1)
    a(crops)
    state = a.state()
    first = a(crops)
    a.set_state(state)
    assert torch.equal(a(crops), first)


def test_fixed_corrupted_copy_is_reproducible_and_differs_from_clean(crops):
    one, two = corrupt_fixed(crops, seed=7), corrupt_fixed(crops, seed=7)
    assert torch.equal(one, two)
    assert not torch.equal(one, crops.float() / 255)


def test_unknown_mode_lists_the_choices():
    with pytest.raises(ValueError, match="none, light, corruptions"):
        Augmenter("heavy")


def test_cli_lists_the_augment_modes_without_importing_torch():
    from engines.train.augment import MODES
    from scanner.cli.train import AUGMENT_MODES

    assert AUGMENT_MODES == MODES
