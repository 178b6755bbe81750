"""HorizontalTokenMixup: the HTM module in front of a block (docs/design.md §2.2, paper Alg. 1)."""
import math

import pytest
import torch
import torch.nn.functional as F

from tokenmixup import HorizontalTokenMixup, ScoreNet

STATS_KEYS = {'easy_samples', 'mixed_samples', 'replaced_tokens', 'difficulty', 'difficulty_min', 'gain', 'gain_max',
              'nonfinite_samples'}


def _random_saliency(batch_size: int, num_tokens: int) -> torch.Tensor:
    """Rows like attention saliency: positive, summing to 1, all different."""
    return torch.randn(batch_size, num_tokens).softmax(dim=-1)


def _soft_target(batch_size: int, num_classes: int) -> torch.Tensor:
    return torch.randn(batch_size, num_classes).softmax(dim=-1)


# ---------------------------------------------------------------------------------------------
# the hand-made example
#
# B = 3, N = T = 4 (no prefix), D = 2, C = 2, rho = 0.07. The ScoreNet (avg pool) predicts logits (5, 0) for
# every sample, so class-0 samples have CE log(1 + e^-5) ~ 0.0067 and the class-1 sample CE 5 + log(1 + e^-5);
# with tau = 1 samples 0 and 2 are easy, sample 1 is hard.
#
#   S0 = (0.40, 0.30, 0.20, 0.10)   S1 = (0.10, 0.20, 0.30, 0.40)   S2 = (0.25, 0.25, 0.25, 0.25)
#
# Gain (Eq. 6) G[i, j] = sum_t max(S_j,t - S_i,t - 0.07, 0):
#   row 0: G[0,0] = 0, G[0,1] = 0.03 + 0.23 = 0.26, G[0,2] = 0.08
#   row 2: G[2,0] = 0.08, G[2,1] = 0.08, G[2,2] = 0
# Hungarian (distinct columns): 0 -> 1, 2 -> 0 (total 0.34; every other choice is <= 0.26).
# Masks (Eq. 9): row 0 takes tokens 2, 3 from sample 1; row 2 takes token 0 from sample 0.
# Stats: easy 2, mixed 2, replaced_tokens 3 / 2, gain_max 0.26, gain_mean (0.26 + 0.08) / 2 = 0.17.
# Labels (Eq. 11): row 0: a = 0.4 + 0.3 = 0.7, b = 0.3 + 0.4 = 0.7 -> (0.5, 0.5);
#                  row 2: a = 0.75, b = 0.40 -> y2 and y0 are both class 0, so (1, 0).

HAND_SALIENCY = torch.tensor([
    [0.40, 0.30, 0.20, 0.10],
    [0.10, 0.20, 0.30, 0.40],
    [0.25, 0.25, 0.25, 0.25],
])
HAND_LABELS = torch.tensor([0, 1, 0])
EASY_CE = math.log1p(math.exp(-5.0))
HARD_CE = 5.0 + math.log1p(math.exp(-5.0))


def _hand_module(**kwargs) -> HorizontalTokenMixup:
    settings = dict(dim=2, num_classes=2, tau=1.0, rho=0.07, scorenet_lambda=0.5, scorenet_pool='avg')
    settings.update(kwargs)
    htm = HorizontalTokenMixup(**settings).train()
    with torch.no_grad():
        htm.scorenet.head.weight.zero_()
        htm.scorenet.head.bias.copy_(torch.tensor([5.0, 0.0]))
    return htm


def _hand_tokens() -> torch.Tensor:
    """Token t of sample b is (10 b + t, -(10 b + t)): every token says where it came from."""
    ids = (10.0 * torch.arange(3).view(3, 1) + torch.arange(4).view(1, 4))
    return torch.stack([ids, -ids], dim=-1)


def test_hand_example_mixes_the_easy_samples_with_their_hungarian_partners():
    """Alg. 1 lines 3-8 / Eq. 6-10: row 0 takes tokens 2, 3 of sample 1; row 2 token 0 of sample 0."""
    x = _hand_tokens()
    result = _hand_module()(x, F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY)
    expected = x.clone()
    expected[0, 2:] = x[1, 2:]
    expected[2, 0] = x[0, 0]
    torch.testing.assert_close(result.x, expected, rtol=0, atol=0)


def test_hand_example_mixes_labels_by_saliency():
    """Eq. 11: row 0 becomes (0.5, 0.5); row 2 mixes two class-0 labels; the hard row 1 is unchanged."""
    result = _hand_module()(_hand_tokens(), F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY)
    torch.testing.assert_close(result.target, torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]))


def test_hand_example_statistics():
    """easy = 2, mixed = 2, replaced_tokens = mask.sum() / mixed = 3 / 2, difficulty min/mean from the CEs,
    gain_max / gain_mean over the chosen pairs of easy samples: 0.26 and (0.26 + 0.08) / 2."""
    stats = _hand_module()(_hand_tokens(), F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY).stats
    expected = {
        'easy_samples': 2.0,
        'mixed_samples': 2.0,
        'replaced_tokens': 1.5,
        'difficulty': (2 * EASY_CE + HARD_CE) / 3,
        'difficulty_min': EASY_CE,
        'gain': 0.17,
        'gain_max': 0.26,
        'nonfinite_samples': 0.0,
    }
    assert stats.mask.shape == (0,) and stats.partner.shape == (0,)  # only with return_mix
    for key, value in expected.items():
        torch.testing.assert_close(getattr(stats, key), torch.tensor(value), msg=key)


def test_statistics_are_exactly_the_eight_documented_scalar_float_tensors():
    """docs/design.md §2.2: statistics are returned as tensors (never synced), one 0-dim float32 tensor per key."""
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9, rho=0.0).train()
    stats = htm(torch.randn(6, 7, 8), _soft_target(6, 5), _random_saliency(6, 7)).stats
    values = {key: value for key, value in stats._asdict().items() if key not in ('mask', 'partner')}
    assert set(values) == STATS_KEYS
    for key, value in values.items():
        assert isinstance(value, torch.Tensor), key
        assert value.ndim == 0 and value.dtype == torch.float32, key


def test_hand_example_loss_is_lambda_times_mean_difficulty():
    """ScoreNet loss = lambda * mean_i d_i = 0.5 * (2 CE_easy + CE_hard) / 3."""
    result = _hand_module()(_hand_tokens(), F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY)
    torch.testing.assert_close(result.loss, torch.tensor(0.5 * (2 * EASY_CE + HARD_CE) / 3))


def test_mask_reference_first_compares_against_the_first_easy_sample():
    """docs/design.md §2.2 step 5, mask_reference='first': row 2's mask is built against S0 (the first easy sample)
    instead of S2: S0 - S0 > rho nowhere, so row 2 replaces nothing, and row 0 (its own reference) is as before."""
    x = _hand_tokens()
    result = _hand_module(mask_reference='first')(x, F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY)
    expected = x.clone()
    expected[0, 2:] = x[1, 2:]
    torch.testing.assert_close(result.x, expected, rtol=0, atol=0)
    # an easy sample that replaced nothing is not 'mixed': replaced_tokens = mask.sum() / mixed = 2 / 1
    torch.testing.assert_close(result.stats.easy_samples, torch.tensor(2.0))
    torch.testing.assert_close(result.stats.mixed_samples, torch.tensor(1.0))
    torch.testing.assert_close(result.stats.replaced_tokens, torch.tensor(2.0))


# ---------------------------------------------------------------------------------------------
# parameters and buffers (docs/design.md §3)

@pytest.mark.parametrize('pool, prefix, saliency', [('attn', 0, 'mean'), ('avg', 0, 'mean'), ('cls', 1, 'cls')])
def test_every_parameter_name_contains_scorenet_and_there_are_no_buffers(pool, prefix, saliency):
    htm = HorizontalTokenMixup(dim=8, num_classes=5, scorenet_pool=pool, saliency=saliency, num_prefix_tokens=prefix)
    names = [name for name, _ in htm.named_parameters()]
    assert names and all('scorenet' in name for name in names), names
    assert list(htm.named_buffers()) == []


# ---------------------------------------------------------------------------------------------
# gating by difficulty (Alg. 1 line 3: easy iff d_i < tau)

def test_tau_zero_mixes_nothing_because_cross_entropy_is_never_negative():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=0.0, rho=0.0).train()
    x, target = torch.randn(6, 7, 8), _soft_target(6, 5)
    result = htm(x, target, _random_saliency(6, 7))
    assert torch.equal(result.x, x)
    assert torch.equal(result.target, target)
    assert result.stats.easy_samples.item() == 0
    assert result.stats.mixed_samples.item() == 0
    assert result.stats.replaced_tokens.item() == 0


def test_no_easy_sample_still_returns_the_scorenet_loss():
    """docs/design.md §2.2: no easy sample -> tokens and labels pass unchanged, but the ScoreNet loss still counts."""
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=0.0, scorenet_lambda=1.0).train()
    result = htm(torch.randn(6, 7, 8), _soft_target(6, 5), _random_saliency(6, 7))
    assert result.loss.item() > 0
    assert result.loss.requires_grad


def test_huge_tau_with_rho_zero_mixes_when_saliencies_differ():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9, rho=0.0).train()
    x, target = torch.randn(6, 7, 8), _soft_target(6, 5)
    result = htm(x, target, _random_saliency(6, 7))
    assert result.stats.easy_samples.item() == 6
    assert result.stats.mixed_samples.item() > 0
    assert result.stats.replaced_tokens.item() > 0
    assert not torch.equal(result.x, x)
    assert not torch.equal(result.target, target)


def test_prefix_tokens_are_never_mixed():
    """docs/design.md §2.2 step 6: prefix tokens are kept."""
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9, rho=0.0, saliency='cls',
                               scorenet_pool='cls', num_prefix_tokens=2).train()
    x = torch.randn(6, 9, 8)
    result = htm(x, _soft_target(6, 5), _random_saliency(6, 7))
    assert result.stats.mixed_samples.item() > 0
    assert torch.equal(result.x[:, :2], x[:, :2])


def test_batch_keeps_its_order_and_only_easy_rows_change():
    """docs/design.md §2.2 step 8: the batch keeps its order; a hard sample comes back unchanged at its own index."""
    htm = _hand_module()
    x = _hand_tokens()
    target = F.one_hot(HAND_LABELS, 2).float()
    result = htm(x, target, HAND_SALIENCY)
    assert torch.equal(result.x[1], x[1])
    assert torch.equal(result.target[1], target[1])


# ---------------------------------------------------------------------------------------------
# eval mode (docs/design.md §2.2: the identity, costs nothing)

def test_eval_mode_is_the_identity_with_zero_loss_and_empty_stats():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9, rho=0.0).eval()
    x, target = torch.randn(6, 7, 8), _soft_target(6, 5)
    result = htm(x, target, _random_saliency(6, 7))
    assert result.x is x
    assert result.target is target
    assert result.loss.ndim == 0 and result.loss.item() == 0.0
    assert result.stats is None


def test_eval_mode_does_not_call_the_scorenet(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('ScoreNet was called in eval mode')

    monkeypatch.setattr(ScoreNet, 'forward', fail)
    monkeypatch.setattr(ScoreNet, 'difficulty', fail)
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9).eval()
    x = torch.randn(6, 7, 8)
    assert htm(x, _soft_target(6, 5), _random_saliency(6, 7)).x is x


def test_scorenet_patch_used_by_the_eval_test_does_fire_in_training(monkeypatch):
    """Guards the test above: the patched ScoreNet.forward is what training mode calls."""
    def fail(*args, **kwargs):
        raise AssertionError('called')

    monkeypatch.setattr(ScoreNet, 'forward', fail)
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9).train()
    with pytest.raises(AssertionError, match='called'):
        htm(torch.randn(6, 7, 8), _soft_target(6, 5), _random_saliency(6, 7))


# ---------------------------------------------------------------------------------------------
# the ScoreNet loss (docs/design.md §2.2 step 1)

def test_loss_is_lambda_times_mean_soft_cross_entropy_of_the_scorenet():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1.0, scorenet_lambda=0.25).train()
    x, target = torch.randn(6, 7, 8), _soft_target(6, 5)
    result = htm(x, target, _random_saliency(6, 7))
    expected = 0.25 * F.cross_entropy(htm.scorenet(x), target)  # torch's CE with probabilities, mean over B
    torch.testing.assert_close(result.loss, expected)


def test_loss_back_propagates_into_scorenet_parameters():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, scorenet_lambda=1.0).train()
    htm(torch.randn(6, 7, 8), _soft_target(6, 5), _random_saliency(6, 7)).loss.backward()
    for name, parameter in htm.named_parameters():
        assert parameter.grad is not None, name
        if name != 'scorenet.attn_pool.bias':  # a softmax does not see a shift shared by every token
            assert parameter.grad.abs().sum() > 0, name


def test_scorenet_detach_true_gives_the_tokens_no_gradient_from_the_scorenet_loss():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=0.0, scorenet_lambda=1.0, scorenet_detach=True).train()
    x = torch.randn(6, 7, 8, requires_grad=True)
    loss = htm(x, _soft_target(6, 5), _random_saliency(6, 7)).loss
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    assert grad is None or grad.abs().sum() == 0
    assert htm.scorenet.head.weight.requires_grad
    (head_grad,) = torch.autograd.grad(htm(x, _soft_target(6, 5), _random_saliency(6, 7)).loss,
                                       htm.scorenet.head.weight)
    assert head_grad.abs().sum() > 0


def test_scorenet_detach_false_lets_the_scorenet_loss_shape_the_tokens():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=0.0, scorenet_lambda=1.0, scorenet_detach=False).train()
    x = torch.randn(6, 7, 8, requires_grad=True)
    loss = htm(x, _soft_target(6, 5), _random_saliency(6, 7)).loss
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    assert grad is not None and grad.abs().sum() > 0


def test_mixed_tokens_carry_gradient_to_both_partners():
    """Eq. 10 is a selection, so the mixed tokens stay differentiable with respect to the input tokens."""
    x = _hand_tokens().requires_grad_(True)
    result = _hand_module()(x, F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY)
    (grad,) = torch.autograd.grad(result.x.sum(), x)
    # token 0 of sample 0 now also feeds row 2; tokens 2, 3 of sample 0 were replaced
    expected = torch.ones(3, 4, 2)
    expected[0, 0] = 2.0
    expected[0, 2:] = 0.0
    expected[1, 2:] = 2.0
    expected[2, 0] = 0.0
    torch.testing.assert_close(grad, expected)


# ---------------------------------------------------------------------------------------------
# targets (docs/design.md §2: modules accept hard labels and one-hot encode them)

def test_hard_int64_labels_are_one_hot_encoded():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=0.0).train()
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    result = htm(torch.randn(6, 7, 8), labels, _random_saliency(6, 7))
    assert result.target.dtype == torch.float32
    assert torch.equal(result.target, F.one_hot(labels, 5).float())


def test_hard_labels_give_the_same_result_as_their_one_hot_targets():
    htm = _hand_module()
    from_labels = htm(_hand_tokens(), HAND_LABELS, HAND_SALIENCY)
    from_one_hot = htm(_hand_tokens(), F.one_hot(HAND_LABELS, 2).float(), HAND_SALIENCY)
    assert torch.equal(from_labels.x, from_one_hot.x)
    assert torch.equal(from_labels.target, from_one_hot.target)
    assert torch.equal(from_labels.loss, from_one_hot.loss)


def test_target_with_the_wrong_class_count_raises_value_error():
    htm = HorizontalTokenMixup(dim=8, num_classes=5).train()
    with pytest.raises(ValueError, match='7 classes'):
        htm(torch.randn(6, 7, 8), _soft_target(6, 7), _random_saliency(6, 7))


def test_hard_label_out_of_range_raises_value_error():
    htm = HorizontalTokenMixup(dim=8, num_classes=5).train()
    with pytest.raises(ValueError):
        htm(torch.randn(6, 7, 8), torch.tensor([0, 1, 2, 3, 4, 5]), _random_saliency(6, 7))


def test_num_classes_zero_in_training_raises_value_error_and_is_inactive():
    """docs/design.md §3: with num_classes=0 HTM is off and calling it with targets raises ValueError."""
    htm = HorizontalTokenMixup(dim=8, num_classes=0).train()
    target = _soft_target(6, 5)
    assert htm.is_active(target) is False
    with pytest.raises(ValueError, match='num_classes=0'):
        htm(torch.randn(6, 7, 8), target, _random_saliency(6, 7))


def test_is_active_only_in_training_with_targets_and_a_classifier():
    htm = HorizontalTokenMixup(dim=8, num_classes=5)
    target = _soft_target(6, 5)
    assert htm.train().is_active(target) is True
    assert htm.train().is_active(None) is False
    assert htm.eval().is_active(target) is False


def test_reset_classifier_changes_the_class_count_it_accepts():
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=0.0).train()
    htm.reset_classifier(3)
    assert htm.num_classes == 3 and htm.scorenet.head.out_features == 3
    assert htm(torch.randn(6, 7, 8), _soft_target(6, 3), _random_saliency(6, 7)).target.shape == (6, 3)
    htm.reset_classifier(0)
    assert htm.is_active(_soft_target(6, 3)) is False


# ---------------------------------------------------------------------------------------------
# saliency reduction (docs/design.md §2.1)

def test_compute_saliency_mean_averages_heads_and_all_queries():
    """Eq. 3: S_t = mean over heads and queries of A[:, h, q, t]."""
    htm = HorizontalTokenMixup(dim=8, num_classes=5, saliency='mean')
    attn = torch.tensor([[  # B = 1, H = 2, N = 2
        [[1.0, 0.0], [0.5, 0.5]],
        [[0.0, 1.0], [0.5, 0.5]],
    ]])
    torch.testing.assert_close(htm.compute_saliency(attn), torch.tensor([[0.5, 0.5]]))
    attn2 = torch.tensor([[[[0.8, 0.2], [0.6, 0.4]], [[0.2, 0.8], [0.0, 1.0]]]])
    torch.testing.assert_close(htm.compute_saliency(attn2), torch.tensor([[0.4, 0.6]]))


def test_compute_saliency_cls_reads_the_cls_query_row_over_non_prefix_keys():
    """docs/design.md §2.1 'cls': S[b, t] = mean over heads of A[b, h, 0, P + t]; other query rows are ignored."""
    htm = HorizontalTokenMixup(dim=8, num_classes=5, saliency='cls', scorenet_pool='cls', num_prefix_tokens=1)
    attn = torch.tensor([[  # B = 1, H = 2, N = 3, P = 1
        [[0.2, 0.6, 0.2], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
        [[0.4, 0.2, 0.4], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
    ]])
    torch.testing.assert_close(htm.compute_saliency(attn), torch.tensor([[0.4, 0.3]]))
    torch.testing.assert_close(htm.compute_saliency(attn[:, :, :1]), torch.tensor([[0.4, 0.3]]))  # Q = 1 suffices


# ---------------------------------------------------------------------------------------------
# constructor checks (docs/design.md §5.3: validated at construction, ValueError naming the argument)

@pytest.mark.parametrize('name, value', [
    ('tau', -0.1), ('rho', -1e-3), ('scorenet_lambda', -1.0),
    ('tau', float('nan')), ('tau', float('inf')), ('rho', float('nan')), ('scorenet_lambda', float('inf')),
])
def test_negative_or_non_finite_thresholds_raise_value_error(name, value):
    with pytest.raises(ValueError, match=name):
        HorizontalTokenMixup(dim=8, num_classes=5, **{name: value})


@pytest.mark.parametrize('kwargs, name', [
    (dict(saliency='max'), 'saliency'),
    (dict(saliency='cls', num_prefix_tokens=0), 'saliency'),
    (dict(mask_reference='last'), 'mask_reference'),
    (dict(scorenet_detach=1), 'scorenet_detach'),
    (dict(scorenet_detach='yes'), 'scorenet_detach'),
    (dict(scorenet_pool='max'), 'scorenet_pool'),
    (dict(num_prefix_tokens=-1), 'num_prefix_tokens'),
])
def test_invalid_settings_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HorizontalTokenMixup(dim=8, num_classes=5, **kwargs)


# ---------------------------------------------------------------------------------------------
# host synchronisation (docs/design.md §2.2 / §9: one device-to-host copy per HTM layer per step)

def test_one_training_forward_makes_exactly_one_host_copy(monkeypatch):
    """The one device-to-host copy per HTM layer per step is the gain matrix: exactly one .cpu(), and no
    .item(), .tolist(), truth-value test or int()/float()/index conversion of a tensor during a training
    forward with soft targets."""
    htm = HorizontalTokenMixup(dim=8, num_classes=5, tau=1e9, rho=0.0).train()
    x, target, saliency = torch.randn(6, 7, 8), _soft_target(6, 5), _random_saliency(6, 7)
    calls = {'cpu': 0, 'item': 0, 'tolist': 0, '__bool__': 0, '__int__': 0, '__float__': 0, '__index__': 0}
    with monkeypatch.context() as patch:
        for name in calls:
            original = getattr(torch.Tensor, name)

            def counting(self, *args, _name=name, _original=original, **kwargs):
                calls[_name] += 1
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counting)
        result = htm(x, target, saliency)
    assert calls == {'cpu': 1, 'item': 0, 'tolist': 0, '__bool__': 0, '__int__': 0, '__float__': 0, '__index__': 0}
    assert result.stats.mixed_samples.item() > 0  # the forward did the full mixing path


def test_host_sync_counter_detects_a_sync():
    """Guards the test above: the counting wrappers do see Python-level syncs."""
    calls = []
    original = torch.Tensor.__bool__

    def counting(self):
        calls.append(1)
        return original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, '__bool__', counting)
        if torch.tensor(1.0) > 0:
            pass
    assert calls == [1]
