"""ScoreNet: pooling + Linear(D, C); difficulty = soft cross-entropy of its prediction.

docs/design.md §2.2 step 1; paper Eq. 1.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenmixup import ScoreNet


def _set_linear(linear: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def _identity_head(scorenet: ScoreNet) -> None:
    """Make the final Linear the identity (needs num_classes == dim), so forward() shows the pooled feature."""
    with torch.no_grad():
        scorenet.head.weight.copy_(torch.eye(scorenet.dim))
        scorenet.head.bias.zero_()


# ---------------------------------------------------------------------------------------------
# pooling

def test_attn_pool_is_seqpool_softmax_over_tokens_of_a_linear_then_weighted_sum():
    """'attn' = CCT's SeqPool: w = softmax_t(Linear(D, 1)(x_t)), pooled = sum_t w_t x_t."""
    scorenet = ScoreNet(dim=2, num_classes=2, pool='attn')
    _set_linear(scorenet.attn_pool, [[1.0, 0.0]], [0.0])  # score of a token = its first feature
    _identity_head(scorenet)
    x = torch.tensor([[[0.0, 1.0], [math.log(3.0), 2.0]]])  # scores 0 and log 3 -> weights 1/4, 3/4
    expected = torch.tensor([[0.25 * 0.0 + 0.75 * math.log(3.0), 0.25 * 1.0 + 0.75 * 2.0]])
    torch.testing.assert_close(scorenet.pool_tokens(x), expected)
    torch.testing.assert_close(scorenet(x), expected)


def test_attn_pool_skips_prefix_tokens():
    """The softmax runs over the T = N - P non-prefix tokens only; the CLS token gets no weight."""
    scorenet = ScoreNet(dim=2, num_classes=2, pool='attn', num_prefix_tokens=1)
    _set_linear(scorenet.attn_pool, [[1.0, 0.0]], [0.0])
    x = torch.tensor([[[100.0, 100.0], [0.0, 1.0], [math.log(3.0), 2.0]]])  # a huge CLS token would dominate
    expected = torch.tensor([[0.75 * math.log(3.0), 0.25 * 1.0 + 0.75 * 2.0]])
    torch.testing.assert_close(scorenet.pool_tokens(x), expected)


def test_avg_pool_is_the_mean_of_non_prefix_tokens():
    scorenet = ScoreNet(dim=2, num_classes=2, pool='avg', num_prefix_tokens=1)
    x = torch.tensor([[[100.0, -100.0], [1.0, 2.0], [3.0, 6.0]]])
    torch.testing.assert_close(scorenet.pool_tokens(x), torch.tensor([[2.0, 4.0]]))


def test_avg_pool_without_prefix_averages_every_token():
    scorenet = ScoreNet(dim=2, num_classes=2, pool='avg')
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]]])
    torch.testing.assert_close(scorenet.pool_tokens(x), torch.tensor([[3.0, 3.0]]))


def test_cls_pool_is_token_zero():
    scorenet = ScoreNet(dim=2, num_classes=2, pool='cls', num_prefix_tokens=1)
    x = torch.tensor([[[7.0, -7.0], [1.0, 2.0], [3.0, 6.0]]])
    torch.testing.assert_close(scorenet.pool_tokens(x), torch.tensor([[7.0, -7.0]]))


def test_forward_is_the_linear_head_of_the_pooled_feature():
    scorenet = ScoreNet(dim=2, num_classes=3, pool='avg')
    _set_linear(scorenet.head, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.5, 0.0, -1.0])
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])  # mean (2, 4)
    torch.testing.assert_close(scorenet(x), torch.tensor([[2.5, 4.0, 5.0]]))


# ---------------------------------------------------------------------------------------------
# size (docs/design.md §5.1: the paper's 3.81M for CCT-7/3x1 + HTM)

def test_attn_scorenet_for_cct7_on_cifar100_has_257_plus_25700_parameters():
    """SeqPool Linear(256, 1) has 257 parameters, the classifier Linear(256, 100) 25,700."""
    scorenet = ScoreNet(dim=256, num_classes=100, pool='attn')
    assert sum(p.numel() for p in scorenet.attn_pool.parameters()) == 257
    assert sum(p.numel() for p in scorenet.head.parameters()) == 25_700
    assert sum(p.numel() for p in scorenet.parameters()) == 257 + 25_700


def test_avg_and_cls_scorenets_have_only_the_classifier():
    assert sum(p.numel() for p in ScoreNet(256, 100, pool='avg').parameters()) == 25_700
    assert sum(p.numel() for p in ScoreNet(256, 100, pool='cls', num_prefix_tokens=1).parameters()) == 25_700


# ---------------------------------------------------------------------------------------------
# difficulty (Eq. 1)

def test_difficulty_is_cross_entropy_against_one_hot_targets():
    """Eq. 1: d_i = -sum_c y_ic log softmax(ScoreNet(x_i))_c; with one-hot y it is the usual CE."""
    scorenet = ScoreNet(dim=4, num_classes=3, pool='attn')
    x = torch.randn(5, 6, 4)
    labels = torch.tensor([0, 2, 1, 1, 0])
    expected = F.cross_entropy(scorenet(x), labels, reduction='none')
    difficulty = scorenet.difficulty(x, F.one_hot(labels, 3).float())
    assert difficulty.shape == (5,) and difficulty.dtype == torch.float32
    torch.testing.assert_close(difficulty, expected)


def test_difficulty_by_hand_for_two_classes():
    """Logits (log 3, 0): p = (3/4, 1/4); CE is -log(3/4) for class 0 and -log(1/4) for class 1."""
    scorenet = ScoreNet(dim=2, num_classes=2, pool='avg')
    _set_linear(scorenet.head, [[0.0, 0.0], [0.0, 0.0]], [math.log(3.0), 0.0])
    x = torch.zeros(2, 3, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(scorenet.difficulty(x, target), torch.tensor([-math.log(0.75), -math.log(0.25)]))


def test_difficulty_against_soft_targets_weights_each_class():
    """Soft targets (mixup/label smoothing): d = -(0.5 log 3/4 + 0.5 log 1/4)."""
    scorenet = ScoreNet(dim=2, num_classes=2, pool='avg')
    _set_linear(scorenet.head, [[0.0, 0.0], [0.0, 0.0]], [math.log(3.0), 0.0])
    difficulty = scorenet.difficulty(torch.zeros(1, 3, 2), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(difficulty, torch.tensor([-0.5 * (math.log(0.75) + math.log(0.25))]))


def test_difficulty_is_differentiable_with_respect_to_scorenet_parameters():
    scorenet = ScoreNet(dim=4, num_classes=3, pool='attn')
    scorenet.difficulty(torch.randn(2, 5, 4), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])).mean().backward()
    assert scorenet.head.weight.grad is not None and scorenet.head.weight.grad.abs().sum() > 0
    assert scorenet.attn_pool.weight.grad is not None and scorenet.attn_pool.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# reset_classifier (docs/design.md §3)

def test_reset_classifier_rebuilds_the_linear_with_n_outputs():
    scorenet = ScoreNet(dim=8, num_classes=10, pool='attn')
    old_head = scorenet.head
    scorenet.reset_classifier(7)
    assert isinstance(scorenet.head, nn.Linear) and scorenet.head is not old_head
    assert (scorenet.head.in_features, scorenet.head.out_features) == (8, 7)
    assert scorenet.num_classes == 7
    assert scorenet(torch.randn(2, 3, 8)).shape == (2, 7)


def test_reset_classifier_zero_removes_the_linear():
    scorenet = ScoreNet(dim=8, num_classes=10, pool='avg')
    scorenet.reset_classifier(0)
    assert scorenet.num_classes == 0
    assert not any(isinstance(module, nn.Linear) for module in scorenet.modules())
    assert sum(p.numel() for p in scorenet.parameters()) == 0


def test_difficulty_without_a_classifier_raises_value_error():
    scorenet = ScoreNet(dim=8, num_classes=10, pool='attn')
    scorenet.reset_classifier(0)
    with pytest.raises(ValueError, match='num_classes=0'):
        scorenet.difficulty(torch.randn(2, 3, 8), torch.full((2, 10), 0.1))


def test_scorenet_built_with_zero_classes_cannot_score():
    scorenet = ScoreNet(dim=8, num_classes=0, pool='attn')
    with pytest.raises(ValueError):
        scorenet.difficulty(torch.randn(2, 3, 8), torch.zeros(2, 0))


def test_reset_classifier_keeps_the_dtype_of_the_head_it_replaces():
    scorenet = ScoreNet(dim=8, num_classes=10, pool='avg').double()
    scorenet.reset_classifier(4)
    assert scorenet.head.weight.dtype == torch.float64
    assert scorenet(torch.randn(2, 3, 8, dtype=torch.float64)).shape == (2, 4)


# ---------------------------------------------------------------------------------------------
# argument checks

def test_unknown_pool_raises_value_error():
    with pytest.raises(ValueError, match='max'):
        ScoreNet(dim=8, num_classes=10, pool='max')


def test_cls_pool_without_prefix_tokens_raises_value_error():
    with pytest.raises(ValueError, match='CLS'):
        ScoreNet(dim=8, num_classes=10, pool='cls', num_prefix_tokens=0)


def test_negative_num_classes_raises_value_error():
    with pytest.raises(ValueError, match='num_classes'):
        ScoreNet(dim=8, num_classes=-1)


def test_reset_classifier_with_negative_num_classes_raises_value_error():
    scorenet = ScoreNet(dim=8, num_classes=10)
    with pytest.raises(ValueError, match='num_classes'):
        scorenet.reset_classifier(-3)
    assert scorenet.num_classes == 10


@pytest.mark.parametrize('pool, prefix', [('attn', 0), ('avg', 0), ('cls', 1)])
def test_tokens_of_the_wrong_width_raise_value_error(pool, prefix):
    scorenet = ScoreNet(dim=8, num_classes=10, pool=pool, num_prefix_tokens=prefix)
    with pytest.raises(ValueError, match=r'\(B, N, 8\)'):
        scorenet(torch.randn(2, 3, 7))


def test_tokens_without_a_sequence_axis_raise_value_error():
    scorenet = ScoreNet(dim=8, num_classes=10)
    with pytest.raises(ValueError, match=r'\(B, N, 8\)'):
        scorenet(torch.randn(2, 8))
