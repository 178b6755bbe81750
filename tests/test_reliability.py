"""Numerics and edge cases that must never kill a run or silently go wrong (README "Reliability").

Non-finite samples are left out of HTM instead of raising; settings given as numpy scalars work; the
default VTM kappa follows the token count actually built; mismatched targets are refused in every
mode; CCT builds on the meta device, takes timm's device/dtype keywords, handles an empty batch and
says which image size it was built for.
"""
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers the zoo)
from tokenmixup import HorizontalTokenMixup, horizontal_mix, manifold_mix

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _batch(batch_size: int = 6, num_tokens: int = 8, dim: int = 4, classes: int = 5):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch_size, num_tokens, dim, generator=generator)
    y = torch.randn(batch_size, classes, generator=generator).softmax(dim=-1)
    saliency = torch.rand(batch_size, num_tokens, generator=generator).softmax(dim=-1)
    return x, y, saliency


# ---------------------------------------------------------------------------------------------
# non-finite samples: left unmixed, never partners, counted, and the step goes on

@pytest.mark.parametrize('where', ['tokens', 'saliency'])
@pytest.mark.parametrize('pairing', ['hungarian', 'random'])
def test_a_non_finite_sample_is_left_unmixed_and_never_a_partner(where, pairing):
    x, y, saliency = _batch()
    if where == 'tokens':
        x[2, 3, 1] = float('inf')
    else:
        saliency[2, 5] = float('nan')
    easy = torch.ones(6, dtype=torch.bool)
    for seed in range(4):
        torch.manual_seed(seed)
        mixed = horizontal_mix(x, y, saliency, easy, rho=0.0, pairing=pairing)
        assert mixed.partner[2] == 2 and not mixed.mask[2].any()
        assert 2 not in mixed.partner[torch.arange(6) != 2].tolist()
        assert torch.isfinite(mixed.x[torch.arange(6) != 2]).all()
        assert torch.isfinite(mixed.y).all()
        assert mixed.mask.any()  # the others still mix


def test_the_htm_module_counts_non_finite_samples_and_does_not_raise():
    x, y, saliency = _batch()
    x[4] = float('nan')
    htm = HorizontalTokenMixup(4, 5, tau=1e9, rho=0.0, difficulty_gating=False).train()
    result = htm(x, y, saliency)
    assert result.stats.nonfinite_samples == 1
    assert result.stats.easy_samples == 5  # without gating every finite sample is easy
    assert torch.equal(result.target[4], y[4])
    assert torch.isfinite(result.x[torch.arange(6) != 4]).all()


def test_manifold_mixup_leaves_non_finite_samples_out():
    x, y, _ = _batch()
    x[1] = float('inf')
    for seed in range(4):
        torch.manual_seed(seed)
        mixed = manifold_mix(x, y, alpha=1.0)
        assert mixed.partner[1] == 1 and 1 not in mixed.partner[torch.arange(6) != 1].tolist()
        assert torch.isfinite(mixed.x[torch.arange(6) != 1]).all()


def test_a_model_with_a_non_finite_image_still_returns_an_output():
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, img_size=16, tau=1e9, rho=0.0).train()
    images = torch.randn(6, 3, 16, 16)
    images[0, 0, 0, 0] = float('nan')
    out = model(images, torch.arange(6))
    assert out.stats[1].nonfinite_samples == 1
    assert out.stats[1].mixed_samples > 0
    assert torch.isfinite(out.target).all()


# ---------------------------------------------------------------------------------------------
# settings given as numpy scalars; the default kappa follows the token count

def test_numpy_settings_are_accepted_by_create_model():
    model = timm.create_model('cct_4_3x2', htm_layers=tuple(np.arange(1, 3)), vtm_layers=[np.int64(3)],
                              tau=np.float32(1.5), kappa=np.int64(4), scorenet_detach=np.bool_(True))
    config = model.tokenmixup_cfg
    assert (config.htm_layers, config.vtm_layers, config.tau, config.kappa) == ((1, 2), (3,), 1.5, 4)
    assert type(config.tau) is float and type(config.kappa) is int and config.scorenet_detach is True
    assert sorted(model.htm) == ['1', '2']


@pytest.mark.parametrize('name, img_size, kappa', [
    ('cct_2_3x2_vtm', 16, 5),     # 16 tokens: round(80 * 16 / 256)
    ('cct_2_3x2_vtm', 32, 20),
    ('cct_2_3x2_vtm', 64, 80),    # 256 tokens
    ('cct_7_3x1_vtm', 64, 320),   # 1024 tokens
    ('cct_2_3x2_vtm', 8, 1),      # 4 tokens: at least 1
])
def test_default_kappa_of_vtm_only_cct_follows_the_img_size_built(name, img_size, kappa):
    assert timm.create_model(name, img_size=img_size).tokenmixup_cfg.kappa == kappa


# ---------------------------------------------------------------------------------------------
# targets whose batch size differs from the images' are refused in every mode and variant

@pytest.mark.parametrize('name', ['cct_2_3x2', 'cct_2_3x2_vtm', 'cct_2_3x2_htm_vtm'])
@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('target', [torch.zeros(5, dtype=torch.long), torch.full((3, 10), 0.1)],
                         ids=['labels', 'soft'])
def test_targets_of_another_batch_size_are_refused(name, mode, target):
    model = timm.create_model(name, num_classes=10, img_size=16).train(mode == 'train')
    with pytest.raises(ValueError, match='target must have one row per image: x has 4 images'):
        model(torch.randn(4, 3, 16, 16), target)


@pytest.mark.parametrize('name', ['cct_2_3x2', 'vit_tiny_patch16_224_htm'])
@pytest.mark.parametrize('target', [[1, 2, 3, 4], (0, 1, 2, 3), 3], ids=['list', 'tuple', 'int'])
def test_a_target_that_is_not_a_tensor_is_a_type_error_asking_for_one(name, target):
    kwargs = dict(img_size=16) if name.startswith('cct') else dict(img_size=32, patch_size=16)
    model = timm.create_model(name, num_classes=10, **kwargs).train()
    size = 16 if name.startswith('cct') else 32
    with pytest.raises(TypeError, match=f'target must be a torch.Tensor: .* got {type(target).__name__}'):
        model(torch.randn(4, 3, size, size), target)


# ---------------------------------------------------------------------------------------------
# CCT: meta device, device/dtype keywords, empty batches, the input size

def test_cct_builds_on_the_meta_device_and_takes_timms_device_and_dtype():
    with torch.device('meta'):
        model = timm.create_model('cct_7_3x1_htm_vtm', num_classes=100)
    assert all(p.device.type == 'meta' for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 3_809_226
    assert next(timm.create_model('cct_2_3x2', device='meta').parameters()).device.type == 'meta'
    sine = timm.create_model('cct_2_3x2', pos_embed='sine', device='meta')
    assert sine.pos_embed.device.type == 'meta'
    assert all(p.dtype == torch.bfloat16 for p in timm.create_model('cct_2_3x2', dtype=torch.bfloat16).parameters())


@pytest.mark.parametrize('name', ['cct_2_3x2', 'cct_2_3x2_htm', 'cct_2_3x2_vtm', 'cct_2_3x2_htm_vtm'])
def test_an_empty_batch_in_training_gives_empty_outputs(name):
    model = timm.create_model(name, num_classes=10, img_size=16).train()
    images = torch.randn(0, 3, 16, 16)
    out = model(images, torch.zeros(0, dtype=torch.long))
    assert out.logits.shape == (0, 10) and out.target.shape == (0, 10)
    assert out.aux_loss.item() == 0.0
    assert all(record.mixed_samples == 0 for record in out.stats.values())
    assert model(images).shape == (0, 10)


def test_a_cct_fed_another_image_size_says_what_it_was_built_for():
    model = timm.create_model('cct_2_3x2_htm', num_classes=10)
    with pytest.raises(ValueError, match=r'built for 32x32 images .* got 16x16; .*img_size='):
        model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match='built for 32x32'):
        model.train()(torch.randn(2, 3, 24, 32), torch.arange(2))
    assert F.softmax(timm.create_model('cct_2_3x2_htm', num_classes=10, img_size=16)(
        torch.randn(2, 3, 16, 16)), dim=-1).shape == (2, 10)
