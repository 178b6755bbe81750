"""The paper's ablations (Table 4) and comparison (Table 5) as settings (docs/design.md §2.4).

Each switch is tested for its defining behaviour, through the functional API, the HTM module and
`timm.create_model`; the defaults are the paper's method (the other test files check it).
"""
import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers the zoo)
import tokenmixup.functional as tmf
from tokenmixup import HorizontalTokenMixup, horizontal_mix, manifold_mix

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _batch(batch_size: int = 8, num_tokens: int = 10, prefix: int = 0, dim: int = 4, classes: int = 5):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, num_tokens + prefix, dim, generator=generator)
    y = torch.randn(batch_size, classes, generator=generator).softmax(dim=-1)
    saliency = torch.rand(batch_size, num_tokens, generator=generator).softmax(dim=-1)
    return x, y, saliency


# ---------------------------------------------------------------------------------------------
# "(-) Sample difficulty assessment": every sample is mixed, the ScoreNet still trains

def test_without_difficulty_gating_every_sample_is_easy_and_the_scorenet_still_trains():
    x, y, saliency = _batch()
    htm = HorizontalTokenMixup(4, 5, tau=0.0, rho=0.0, difficulty_gating=False, scorenet_lambda=1.0).train()
    result = htm(x, y, saliency)
    assert result.stats.easy_samples == 8  # tau = 0 would gate every sample out
    assert result.stats.mixed_samples > 0
    result.loss.backward()
    assert htm.scorenet.head.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# "(-) Optimal assignment": random distinct partners, the gain matrix is never used

def test_random_pairing_ignores_the_gain_matrix(monkeypatch):
    def no_gain(*args, **kwargs):
        raise AssertionError('random pairing computed or solved the gain matrix')

    monkeypatch.setattr(tmf, 'saliency_gain', no_gain)
    monkeypatch.setattr(tmf, '_solve_assignment', no_gain)
    x, y, saliency = _batch()
    easy = torch.tensor([True, False, True, True, False, True, True, True])
    mixed = horizontal_mix(x, y, saliency, easy, rho=0.0, pairing='random')
    partners = mixed.partner[easy]
    assert len(set(partners.tolist())) == len(partners)  # distinct partners
    assert torch.equal(mixed.partner[~easy], torch.nonzero(~easy).flatten())  # the rest keep their own index


def test_random_pairing_varies_with_the_seed_and_hungarian_does_not():
    x, y, saliency = _batch()
    easy = torch.ones(8, dtype=torch.bool)
    partners = {pairing: set() for pairing in ('random', 'hungarian')}
    for seed in range(5):
        torch.manual_seed(seed)
        for pairing in partners:
            partners[pairing].add(tuple(horizontal_mix(x, y, saliency, easy, 0.0, pairing=pairing).partner.tolist()))
    assert len(partners['hungarian']) == 1
    assert len(partners['random']) > 1


# ---------------------------------------------------------------------------------------------
# "(-) Token-level mixup": as many tokens as the saliency mask, at random non-prefix positions

def test_random_token_selection_replaces_as_many_tokens_at_random_positions():
    x, y, saliency = _batch(prefix=2)
    easy = torch.ones(8, dtype=torch.bool)
    by_saliency = horizontal_mix(x, y, saliency, easy, rho=0.0, num_prefix_tokens=2)
    positions = set()
    for seed in range(3):
        torch.manual_seed(seed)
        at_random = horizontal_mix(x, y, saliency, easy, rho=0.0, num_prefix_tokens=2, token_selection='random')
        assert torch.equal(at_random.partner, by_saliency.partner)  # same pairs
        assert torch.equal(at_random.mask.sum(dim=-1), by_saliency.mask.sum(dim=-1))  # same counts per sample
        assert torch.equal(at_random.x[:, :2], x[:, :2])  # prefix tokens never mixed
        expected = torch.where(F.pad(at_random.mask, (2, 0)).unsqueeze(-1), x[at_random.partner], x)
        torch.testing.assert_close(at_random.x, expected, rtol=0, atol=0)
        positions.add(tuple(at_random.mask.flatten().tolist()))
    assert len(positions) > 1


# ---------------------------------------------------------------------------------------------
# "(-) Saliency-based label reassignment": label weight = fraction of tokens kept

def test_count_based_labels_weight_by_the_fraction_of_tokens_kept():
    x, y, saliency = _batch()
    easy = torch.ones(8, dtype=torch.bool)
    mixed = horizontal_mix(x, y, saliency, easy, rho=0.0, label_mixing='count')
    kept_fraction = 1.0 - mixed.mask.float().mean(dim=-1, keepdim=True)
    expected = kept_fraction * y + (1.0 - kept_fraction) * y[mixed.partner]
    torch.testing.assert_close(mixed.y, expected)
    by_saliency = horizontal_mix(x, y, saliency, easy, rho=0.0)
    assert torch.equal(by_saliency.mask, mixed.mask) and not torch.allclose(by_saliency.y, mixed.y)


# ---------------------------------------------------------------------------------------------
# Table 5: manifold mixup at the HTM block

def test_manifold_mix_interpolates_whole_token_sets_with_one_beta_weight():
    x, y, _ = _batch(prefix=1)
    torch.manual_seed(3)
    mixed = manifold_mix(x, y, alpha=2.0, num_prefix_tokens=1)
    assert sorted(mixed.partner.tolist()) == list(range(8))  # a permutation
    moved = mixed.partner != torch.arange(8)  # rows paired with themselves are unchanged
    assert moved.any()
    torch.testing.assert_close(mixed.x[~moved], x[~moved], rtol=0, atol=0)
    source = x[mixed.partner]
    lam = ((mixed.x - source) / (x - source))[moved].flatten()  # the one weight, read back from every entry
    torch.testing.assert_close(lam, lam[:1].expand_as(lam), rtol=1e-4, atol=1e-4)
    assert 0.0 < lam[0] < 1.0
    torch.testing.assert_close(mixed.y, lam[0] * y + (1 - lam[0]) * y[mixed.partner], rtol=1e-4, atol=1e-5)
    assert mixed.mask.shape == (8, 10)
    assert mixed.mask[moved].all() and not mixed.mask[~moved].any()
    torch.testing.assert_close(mixed.y[~moved], y[~moved], rtol=0, atol=0)


def test_manifold_mixing_at_the_htm_block_ignores_gating_and_saliency():
    x, y, _ = _batch()
    htm = HorizontalTokenMixup(4, 5, tau=0.0, mixing='manifold', manifold_alpha=1.0).train()
    assert not htm.needs_saliency
    result = htm(x, y, None)
    assert result.stats.easy_samples == 8 and 0 < result.stats.mixed_samples <= 8
    assert not torch.equal(result.x, x)
    assert result.loss.requires_grad  # the ScoreNet loss still counts


@pytest.mark.parametrize('name, value', [('manifold_alpha', 0.0), ('manifold_alpha', -1.0)])
def test_manifold_alpha_must_be_positive(name, value):
    with pytest.raises(ValueError, match=name):
        HorizontalTokenMixup(4, 5, mixing='manifold', **{name: value})


# ---------------------------------------------------------------------------------------------
# the switches from timm.create_model, end to end

@pytest.mark.parametrize('settings', [
    dict(difficulty_gating=False),
    dict(pairing='random'),
    dict(token_selection='random'),
    dict(label_mixing='count'),
    dict(mixing='manifold'),
], ids=lambda settings: '-'.join(f'{key}={value}' for key, value in settings.items()))
def test_every_switch_trains_a_model_from_create_model(settings):
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, img_size=16, tau=1e9, rho=0.0, **settings).train()
    for name, value in settings.items():
        assert getattr(model.htm['1'].config, name) == value
    images, labels = torch.randn(6, 3, 16, 16), torch.arange(6)
    out = model(images, labels)
    assert out.stats[1].mixed_samples > 0
    torch.testing.assert_close(out.target.sum(dim=-1), torch.ones(6))
    (F.cross_entropy(out.logits, out.target) + out.aux_loss).backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if 'scorenet' in name)
