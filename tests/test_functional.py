"""The functional API of TokenMixup (docs/design.md §2.1, §2.2, §2.5; paper Eq. 3, 6, 7, 9, 10, 11).

Each test states one behaviour. Hand examples use dyadic floats (0.5, 0.25, 0.125, ...) so that
every comparison with a hand-computed value is exact; the random tests compare against a
straightforward re-implementation of the paper's equations written below (`reference_mix`).
"""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

import tokenmixup.functional as tmf
from tokenmixup.functional import (
    HorizontalMix, assign_partners, attention_saliency, horizontal_mix, pair_gain, saliency_gain,
    select_salient_tokens, soft_cross_entropy)
from tokenmixup.targets import as_soft_target, one_hot_target

HALF_DTYPES = (torch.float16, torch.bfloat16)


def _t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


# =============================================================================================
# attention_saliency (docs/design.md §2.1, paper Eq. 3)

def _attention():
    """A (1, 2, 4, 4) attention map, B=1, H=2, Q=N=4, rows summing to 1.

    Column sums over the 4 queries: head 0 = [0.875, 1.125, 1.125, 0.875],
    head 1 = [1.0, 1.0, 0.75, 1.25]; 'mean' divides the per-column total by H * Q = 8.
    """
    head0 = [[0.5, 0.25, 0.125, 0.125],
             [0.25, 0.25, 0.25, 0.25],
             [0.0, 0.5, 0.5, 0.0],
             [0.125, 0.125, 0.25, 0.5]]
    head1 = [[0.25, 0.5, 0.25, 0.0],
             [0.5, 0.0, 0.0, 0.5],
             [0.25, 0.25, 0.25, 0.25],
             [0.0, 0.25, 0.25, 0.5]]
    return _t([[head0, head1]])


def test_saliency_mean_is_eq3_mean_over_heads_and_all_queries():
    """Eq. 3: S_t = mean over heads and the N queries of A[q, t]; P = 0 scores every token."""
    expected = _t([[1.875 / 8, 2.125 / 8, 1.875 / 8, 2.125 / 8]])  # [0.234375, 0.265625, ...]
    assert torch.equal(attention_saliency(_attention(), 0, 'mean'), expected)


def test_saliency_mean_excludes_prefix_key_columns():
    """'mean' with P = 1: the prefix key column is dropped, the others keep their Eq. 3 value."""
    expected = _t([[2.125 / 8, 1.875 / 8, 2.125 / 8]])
    assert torch.equal(attention_saliency(_attention(), 1, 'mean'), expected)


def test_saliency_mean_with_two_prefix_tokens_scores_the_last_n_minus_p_columns():
    attn = torch.randint(0, 8, (2, 3, 6, 6)) / 8  # multiples of 1/8: every mean is exact
    full = attention_saliency(attn, 0, 'mean')
    assert torch.equal(attention_saliency(attn, 2, 'mean'), full[:, 2:])


def test_saliency_cls_is_mean_over_heads_of_query_row_0():
    """'cls' (ViT): S_t = mean over heads of A[0, P + t]; head 0 row 0 = [.25, .125, .125],
    head 1 row 0 = [.5, .25, 0]."""
    expected = _t([[0.375, 0.1875, 0.0625]])
    assert torch.equal(attention_saliency(_attention(), 1, 'cls'), expected)


def test_saliency_cls_accepts_only_the_cls_query_row():
    """'cls' needs only the CLS query: (B, H, 1, N) gives the same result as (B, H, N, N)."""
    attn = torch.rand(3, 2, 5, 5).softmax(-1)
    from_full = attention_saliency(attn, 1, 'cls')
    from_cls_row = attention_saliency(attn[:, :, :1], 1, 'cls')
    assert from_cls_row.shape == (3, 4)
    assert torch.equal(from_cls_row, from_full)


@pytest.mark.parametrize('dtype', HALF_DTYPES)
@pytest.mark.parametrize('reduce', ['mean', 'cls'])
def test_saliency_is_float32_for_half_precision_attention(dtype, reduce):
    attn = _attention().to(dtype)
    saliency = attention_saliency(attn, 1, reduce)
    assert saliency.dtype == torch.float32
    assert torch.equal(saliency, attention_saliency(_attention(), 1, reduce))


@pytest.mark.parametrize('reduce', ['mean', 'cls'])
def test_saliency_carries_no_gradient(reduce):
    """Saliency is read 'without gradient' (docs/design.md §2.1)."""
    attn = _attention().requires_grad_()
    saliency = attention_saliency(attn, 1, reduce)
    assert not saliency.requires_grad
    assert saliency.grad_fn is None


@pytest.mark.parametrize('attn, kwargs, match', [
    (torch.rand(2, 4, 4), {}, r'attn must have shape \(B, H, Q, N\), got \(2, 4, 4\)'),
    (torch.ones(1, 2, 4, 4, dtype=torch.int64), {}, 'attn must be a floating-point'),
    (torch.rand(1, 2, 4, 4), {'reduce': 'max'}, 'reduce must be one of'),
    (torch.rand(1, 2, 4, 4), {'reduce': 'cls', 'num_prefix_tokens': 0}, 'num_prefix_tokens >= 1'),
    (torch.rand(1, 2, 4, 4), {'num_prefix_tokens': 4}, 'num_prefix_tokens'),
    (torch.rand(1, 2, 4, 4), {'num_prefix_tokens': 5, 'reduce': 'cls'}, 'num_prefix_tokens'),
])
def test_saliency_rejects_bad_arguments(attn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_saliency(attn, **kwargs)


# =============================================================================================
# saliency_gain and pair_gain (paper Eq. 6)

def test_gain_eq6_hand_example():
    """Eq. 6: G[i, j] = sum_t max(S[j, t] - S[i, t] - rho, 0), rho = 0.125.

    easy row 0 = [.5, .25, 0]: vs j1 = [.25, .75, .5] -> [0, .375, .375] = .75;
                               vs j2 = [1, 0, .125]  -> [.375, 0, 0]    = .375.
    easy row 1 = [0, 0, 0]:    vs j0 -> [.375, .125, 0] = .5; j1 -> [.125, .625, .375] = 1.125;
                               j2 -> [.875, 0, 0] = .875.
    """
    s_easy = _t([[0.5, 0.25, 0.0], [0.0, 0.0, 0.0]])
    s_all = _t([[0.5, 0.25, 0.0], [0.25, 0.75, 0.5], [1.0, 0.0, 0.125]])
    gain = saliency_gain(s_easy, s_all, 0.125)
    assert gain.dtype == torch.float32
    assert torch.equal(gain, _t([[0.0, 0.75, 0.375], [0.5, 1.125, 0.875]]))


def test_gain_subtracts_rho_per_token_and_clamps_each_token_at_zero():
    """max(., 0) is taken per token: [.5, .0625] - 0 - .125 -> [.375, 0] = .375
    (not .5625 - .125 = .4375 nor .375 - .0625 = .3125)."""
    gain = saliency_gain(_t([[0.0, 0.0]]), _t([[0.5, 0.0625]]), 0.125)
    assert torch.equal(gain, _t([[0.375]]))


def test_gain_of_a_sample_with_itself_is_zero():
    s = torch.rand(5, 7)
    gain = saliency_gain(s, s, 0.0)
    assert torch.equal(torch.diagonal(gain), torch.zeros(5))


def test_gain_shape_is_easy_rows_by_batch():
    assert saliency_gain(torch.rand(2, 6), torch.rand(5, 6), 0.01).shape == (2, 5)


def test_gain_with_no_easy_row_is_empty_0_by_b():
    gain = saliency_gain(torch.rand(0, 6), torch.rand(5, 6), 0.01)
    assert gain.shape == (0, 5)
    assert gain.dtype == torch.float32


@pytest.mark.parametrize('chunk_elements, num_chunks', [(7, 5), (160, 3)])
def test_gain_chunked_equals_unchunked(monkeypatch, chunk_elements, num_chunks):
    """Large batches are processed in row chunks (1 and 2 rows per chunk here); same result."""
    s_easy, s_all = torch.rand(5, 8), torch.rand(10, 8)
    unchunked = saliency_gain(s_easy, s_all, 0.05)
    limits = [name for name in vars(tmf) if name.startswith('_GAIN_CHUNK_ELEMENTS')]
    assert limits, 'the chunk size is a module constant'
    for name in limits:  # one limit per device type, if the module has several
        monkeypatch.setattr(tmf, name, chunk_elements)
    calls = []
    excess = tmf._saliency_excess
    monkeypatch.setattr(tmf, '_saliency_excess', lambda *args: calls.append(1) or excess(*args))
    chunked = saliency_gain(s_easy, s_all, 0.05)
    assert len(calls) == num_chunks, 'the chunked path must be taken'
    torch.testing.assert_close(chunked, unchunked, rtol=0, atol=1e-6)


@pytest.mark.parametrize('s_easy, s_all, rho, match', [
    (torch.rand(2, 3), torch.rand(4, 5), 0.1, r"s_easy must have shape \(B', T\) with T = 5, got \(2, 3\)"),
    (torch.rand(2, 5), torch.rand(4, 5), -0.1, 'rho'),
    (torch.rand(2, 5), torch.rand(4, 5), float('nan'), 'rho'),
    (torch.rand(2, 5), torch.rand(4, 5), True, 'rho'),
    (torch.rand(2, 5), torch.ones(4, 5, dtype=torch.int64), 0.1, 's_all must be a floating-point'),
    (torch.ones(2, 5, dtype=torch.int64), torch.rand(4, 5), 0.1, 's_easy must be a floating-point'),
    (torch.rand(2, 5, device='meta'), torch.rand(4, 5), 0.1, 's_easy is on meta'),
])
def test_gain_rejects_bad_arguments(s_easy, s_all, rho, match):
    with pytest.raises(ValueError, match=match):
        saliency_gain(s_easy, s_all, rho)


def test_pair_gain_is_the_chosen_entries_of_the_gain_matrix():
    """pair_gain(S_i, S_sigma(i)) = G[i, sigma(i)] (Eq. 6 at the assignment of Eq. 7)."""
    s_own, s_all = torch.rand(4, 9), torch.rand(6, 9)
    partner = torch.tensor([2, 0, 5, 1])
    gain = saliency_gain(s_own, s_all, 0.05)
    torch.testing.assert_close(pair_gain(s_own, s_all[partner], 0.05), gain[torch.arange(4), partner],
                               rtol=0, atol=1e-6)


# =============================================================================================
# assign_partners (paper Eq. 7)

def _brute_force_best_total(gain: np.ndarray) -> float:
    rows, columns = gain.shape
    return max(sum(gain[i, c] for i, c in enumerate(cols))
               for cols in itertools.permutations(range(columns), rows))


@pytest.mark.parametrize('seed', range(6))
def test_partners_maximise_total_gain_against_brute_force(seed):
    """Eq. 7: sigma* = argmax_sigma sum_i G[i, sigma(i)] over injective maps, checked by enumerating
    every injective map for B' in 1..4, B in B'..5."""
    generator = torch.Generator().manual_seed(seed)
    for num_easy in range(1, 5):
        for batch_size in range(num_easy, 6):
            gain = torch.rand(num_easy, batch_size, generator=generator)
            partner = assign_partners(gain)
            columns = partner.tolist()
            assert len(set(columns)) == num_easy, 'partners must be distinct'
            assert all(0 <= c < batch_size for c in columns)
            host = gain.double().numpy()
            total = sum(host[i, c] for i, c in enumerate(columns))
            assert math.isclose(total, _brute_force_best_total(host), rel_tol=1e-12, abs_tol=1e-12)


def test_partners_are_long_on_the_gain_device():
    gain = torch.rand(2, 3)
    partner = assign_partners(gain)
    assert partner.dtype == torch.int64
    assert partner.device == gain.device
    assert partner.shape == (2,)


def test_partners_of_no_easy_row_is_empty():
    partner = assign_partners(torch.zeros(0, 4))
    assert partner.shape == (0,)
    assert partner.dtype == torch.int64


def test_partners_hand_example():
    """Row 0 prefers column 1 but row 1 gains far more there: the total is maximised, not each row."""
    gain = _t([[0.0, 1.0, 0.75], [0.0, 2.0, 0.0]])
    assert assign_partners(gain).tolist() == [2, 1]


@pytest.mark.parametrize('gain, match', [
    (torch.rand(3, 2), r"gain must have shape \(B', B\) with B' <= B, got \(3, 2\)"),
    (torch.rand(4), 'gain must have shape'),
    (_t([[0.5, float('nan')]]), 'gain must be finite'),
    (_t([[0.5, float('inf')]]), 'gain must be finite'),
    (torch.ones(2, 3, dtype=torch.int64), 'gain must be a floating-point'),
])
def test_partners_reject_bad_gain(gain, match):
    with pytest.raises(ValueError, match=match):
        assign_partners(gain)


# =============================================================================================
# horizontal_mix (paper Eq. 6-11, Alg. 1; docs/design.md §2.2)

RHO = 0.125


def _hand_batch(prefix=0, dtype=torch.float32):
    """B = 3, T = 4, D = 2, rho = 0.125, only sample 0 easy.

    S[0] = [.5, .125, 0, .125], S[1] = [.25, .25, .25, 0], S[2] = S[0].
    S[1] - S[0] = [-.25, .125, .25, -.125]: token 1 exceeds S[0] by exactly rho (kept, Eq. 9 is
    strict), token 2 by more (replaced). G[0] = [0, .125, 0], so partner(0) = 1 uniquely.
    Eq. 11: a = .5 + .125 + .125 = .75 (kept tokens 0, 1, 3), b = S[1, 2] = .25, a + b = 1,
    y_mix[0] = .75 * [1, 0] + .25 * [0, 1] = [.75, .25].
    """
    saliency = _t([[0.5, 0.125, 0.0, 0.125],
                   [0.25, 0.25, 0.25, 0.0],
                   [0.5, 0.125, 0.0, 0.125]], dtype)
    x = torch.arange(3 * (prefix + 4) * 2, dtype=torch.float32).reshape(3, prefix + 4, 2).to(dtype)
    y = _t([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype)
    easy = torch.tensor([True, False, False])
    return x, y, saliency, easy


def test_mix_returns_horizontal_mix_with_documented_types():
    x, y, saliency, easy = _hand_batch()
    out = horizontal_mix(x, y, saliency, easy, RHO)
    assert isinstance(out, HorizontalMix)
    assert out.x.shape == x.shape and out.x.dtype == x.dtype
    assert out.y.shape == y.shape and out.y.dtype == y.dtype
    assert out.mask.shape == (3, 4) and out.mask.dtype == torch.bool
    assert out.partner.shape == (3,) and out.partner.dtype == torch.int64


def test_mix_partner_is_the_hungarian_choice_and_own_index_elsewhere():
    """Eq. 7 picks partner 1 for the easy sample; non-easy rows report their own index."""
    out = horizontal_mix(*_hand_batch(), RHO)
    assert out.partner.tolist() == [1, 1, 2]


def test_mix_mask_eq9_is_strict_a_difference_equal_to_rho_is_not_replaced():
    """Eq. 9: M_t = 0 (replaced) iff S[j, t] - S[i, t] > rho; token 1 differs by exactly rho."""
    out = horizontal_mix(*_hand_batch(), RHO)
    assert out.mask.tolist() == [[False, False, True, False], [False] * 4, [False] * 4]


def test_mix_tokens_eq10_replaced_tokens_come_from_the_partner():
    """Eq. 10: X_mix = M * X_i + (1 - M) * X_j; only token 2 of sample 0 changes, to x[1, 2]."""
    x, y, saliency, easy = _hand_batch()
    out = horizontal_mix(x, y, saliency, easy, RHO)
    expected = x.clone()
    expected[0, 2] = x[1, 2]
    assert torch.equal(out.x, expected)


def test_mix_labels_eq11_weight_kept_own_saliency_against_taken_partner_saliency():
    """Eq. 11: y_mix = a / (a + b) * y_i + b / (a + b) * y_j with a = .75, b = .25."""
    x, y, saliency, easy = _hand_batch()
    out = horizontal_mix(x, y, saliency, easy, RHO)
    assert torch.equal(out.y, _t([[0.75, 0.25], [0.0, 1.0], [0.5, 0.5]]))


@pytest.mark.parametrize('prefix', [1, 2])
def test_mix_never_touches_prefix_tokens_and_shifts_the_mask_by_p(prefix):
    """Prefix tokens are never mixed; mask column t is token P + t (docs/design.md §2.2 step 6)."""
    x, y, saliency, easy = _hand_batch(prefix)
    out = horizontal_mix(x, y, saliency, easy, RHO, num_prefix_tokens=prefix)
    expected = x.clone()
    expected[0, prefix + 2] = x[1, prefix + 2]
    assert torch.equal(out.x[:, :prefix], x[:, :prefix])
    assert torch.equal(out.x, expected)
    assert out.mask.tolist() == [[False, False, True, False], [False] * 4, [False] * 4]
    assert torch.equal(out.y, _t([[0.75, 0.25], [0.0, 1.0], [0.5, 0.5]]))


def test_mix_prefix_tokens_unchanged_on_random_all_easy_batch():
    x = torch.randn(6, 2 + 5, 3)
    out = horizontal_mix(x, torch.full((6, 4), 0.25), torch.rand(6, 5), torch.ones(6, dtype=torch.bool),
                         0.0, num_prefix_tokens=2)
    assert out.mask.any(), 'the example must mix something'
    assert torch.equal(out.x[:, :2], x[:, :2])


def test_mix_replaced_tokens_are_the_partners_pre_mix_tokens():
    """Eq. 10 uses X^(j), the partner before mixing, even when the partner is itself mixed.

    rho = .125, easy = [T, T, F]; S[0] = [0, 0], S[1] = [.25, .5], S[2] = [.5, 0].
    G[0] = [0, .5, .375], G[1] = [0, 0, .125]; the unique optimum is sigma = (1, 2) (total .625).
    Sample 1 replaces token 0 with x[2, 0]; sample 0 replaces both tokens with x[1] as it was
    before mixing, so out.x[0, 0] is x[1, 0], not x[2, 0].
    """
    saliency = _t([[0.0, 0.0], [0.25, 0.5], [0.5, 0.0]])
    x = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2)
    y = torch.eye(3)
    out = horizontal_mix(x, y, saliency, torch.tensor([True, True, False]), RHO)
    assert out.partner.tolist() == [1, 2, 2]
    assert out.mask.tolist() == [[True, True], [True, False], [False, False]]
    assert torch.equal(out.x[0], x[1])
    assert torch.equal(out.x[1], torch.stack([x[2, 0], x[1, 1]]))
    # labels also use the partner's pre-mix label: a = 0, b = .75 -> y_mix[0] = y[1]
    assert torch.equal(out.y[0], y[1])


def test_mix_without_easy_samples_returns_inputs_unchanged():
    """No easy sample: tokens and labels pass unchanged (docs/design.md §2.2)."""
    x, y, saliency = torch.randn(4, 5, 3), torch.softmax(torch.randn(4, 6), -1), torch.rand(4, 5)
    out = horizontal_mix(x, y, saliency, torch.zeros(4, dtype=torch.bool), 0.0)
    assert torch.equal(out.x, x)
    assert torch.equal(out.y, y)
    assert not out.mask.any()
    assert out.mask.shape == (4, 5)
    assert torch.equal(out.partner, torch.arange(4))


def test_mix_all_easy_pair_swaps_tokens():
    """B' = B = 2 with complementary saliency: the samples exchange their weaker token.

    S[0] = [.5, 0], S[1] = [0, .5]: G = [[0, .375], [.375, 0]], sigma = (1, 0);
    a = b = .5 for both rows, so y_mix = (y_0 + y_1) / 2 for both.
    """
    saliency = _t([[0.5, 0.0], [0.0, 0.5]])
    x = torch.arange(8, dtype=torch.float32).reshape(2, 2, 2)
    y = _t([[1.0, 0.0], [0.0, 1.0]])
    out = horizontal_mix(x, y, saliency, torch.tensor([True, True]), RHO)
    assert out.partner.tolist() == [1, 0]
    assert out.mask.tolist() == [[False, True], [True, False]]
    assert torch.equal(out.x, torch.stack([torch.stack([x[0, 0], x[1, 1]]), torch.stack([x[0, 0], x[1, 1]])]))
    assert torch.equal(out.y, _t([[0.5, 0.5], [0.5, 0.5]]))


def test_mix_batch_of_one_self_matches_and_changes_nothing():
    """Self-matching is allowed and replaces nothing (docs/design.md §2.2 step 4): S[i] - S[i] = 0 <= rho."""
    x, y = torch.randn(1, 4, 3), _t([[0.25, 0.75]])
    for rho in (0.0, RHO):
        out = horizontal_mix(x, y, torch.rand(1, 4), torch.tensor([True]), rho)
        assert out.partner.tolist() == [0]
        assert not out.mask.any()
        assert torch.equal(out.x, x)
        assert torch.equal(out.y, y)


def test_mix_sample_with_no_gain_anywhere_is_left_unchanged():
    """An easy sample whose saliency dominates the batch has G = 0 in its row; whatever partner the
    solver returns (itself included) no token exceeds rho, so its tokens and label are unchanged.

    S[0] = [.5, .5] easy, S[1] = [.25, .5], S[2] = [.5, .25]; other samples not easy.
    """
    saliency = _t([[0.5, 0.5], [0.25, 0.5], [0.5, 0.25]])
    x, y = torch.randn(3, 2, 4), _t([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    out = horizontal_mix(x, y, saliency, torch.tensor([True, False, False]), 0.0)
    assert not out.mask.any()
    assert torch.equal(out.x, x)
    assert torch.equal(out.y, y)


def test_mix_ties_whichever_optimal_partner_mask_tokens_and_labels_follow_it():
    """S[0] = [0, 0] easy, S[1] = [.5, 0], S[2] = [0, .5]: G[0] = [0, .375, .375] is a tie.
    For the partner p chosen, only token p - 1 is replaced and y_mix[0] = y[p] (a = 0, b = .5)."""
    saliency = _t([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]])
    x, y = torch.randn(3, 2, 4), torch.eye(3)
    out = horizontal_mix(x, y, saliency, torch.tensor([True, False, False]), RHO)
    p = out.partner[0].item()
    assert p in (1, 2)
    expected_mask = [False, False]
    expected_mask[p - 1] = True
    assert out.mask[0].tolist() == expected_mask
    expected_x0 = x[0].clone()
    expected_x0[p - 1] = x[p, p - 1]
    assert torch.equal(out.x[0], expected_x0)
    assert torch.equal(out.y[0], y[p])


def test_mix_many_easy_samples_competing_for_one_partner_get_distinct_partners():
    """Eq. 7 assigns each column once: only one of three easy samples may take the salient one."""
    saliency = _t([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    x, y = torch.randn(4, 2, 3), torch.eye(4)
    out = horizontal_mix(x, y, saliency, torch.tensor([True, True, True, False]), RHO)
    partners = out.partner[:3].tolist()
    assert len(set(partners)) == 3
    assert partners.count(3) == 1
    winner = partners.index(3)
    assert out.mask[winner].all()
    assert torch.equal(out.x[winner], x[3])
    assert torch.equal(out.y[winner], y[3])  # a = 0, b = 2


def test_mix_partners_of_easy_rows_are_distinct_on_random_batches():
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        easy = torch.rand(12, generator=generator) < 0.7
        out = horizontal_mix(torch.randn(12, 6, 2, generator=generator), torch.full((12, 2), 0.5),
                             torch.rand(12, 6, generator=generator), easy, 0.05)
        chosen = out.partner[easy].tolist()
        assert len(set(chosen)) == len(chosen)


def test_mix_float64_targets_of_rows_that_are_not_mixed_are_unchanged():
    """Samples that are not easy are left untouched (docs/design.md §2.2 step 8): float64 targets included.

    y (B, C) may be any float dtype and comes back in y's dtype; a row that mixes nothing must
    come back bit for bit, not rounded through float32 (1/3 and 0.1 are not float32 values).
    """
    saliency = _t([[0.5, 0.25, 0.0], [0.0, 0.25, 0.5], [0.25, 0.25, 0.25]], torch.float64)
    x = torch.randn(3, 3, 4, dtype=torch.float64)
    y = torch.tensor([[1 / 3, 2 / 3], [0.1, 0.9], [0.3, 0.7]], dtype=torch.float64)
    out = horizontal_mix(x, y, saliency, torch.tensor([True, False, False]), 0.0)
    assert out.mask[0].any(), 'the example must mix sample 0'
    assert out.y.dtype == torch.float64
    assert torch.equal(out.x[1:], x[1:])
    assert torch.equal(out.y[1:], y[1:])


def test_mix_zero_label_weight_a_plus_b_zero_keeps_the_label():
    """Eq. 11 is undefined when a + b = 0; y_i is kept (docs/design.md §2.2 step 7).

    rho = 0, S[0] = [-.5, 0] easy, S[1] = [0, 0]: token 0 is replaced (0 > -.5) but b = S[1, 0] = 0
    and a = S[0, 1] = 0, so the tokens mix while the label stays y_0 (finite, no 0/0).
    """
    saliency = _t([[-0.5, 0.0], [0.0, 0.0]])
    x, y = torch.randn(2, 2, 3), _t([[1.0, 0.0], [0.0, 1.0]])
    out = horizontal_mix(x, y, saliency, torch.tensor([True, False]), 0.0)
    assert out.mask.tolist() == [[True, False], [False, False]]
    assert torch.equal(out.x[0, 0], x[1, 0])
    assert torch.equal(out.y, y)


def test_mix_all_zero_saliency_gives_finite_unchanged_labels():
    """All-zero saliency: nothing exceeds rho, a = b = 0, labels unchanged and finite."""
    x, y = torch.randn(3, 4, 2), torch.softmax(torch.randn(3, 5), -1)
    out = horizontal_mix(x, y, torch.zeros(3, 4), torch.ones(3, dtype=torch.bool), 0.0)
    assert not out.mask.any()
    assert torch.equal(out.x, x)
    assert torch.equal(out.y, y)


def test_mix_keeps_batch_order_non_easy_rows_identical():
    """Alg. 1 line 8: mixed samples are restored in place; rows that are not easy are untouched,
    have an all-False mask and report their own index as partner (docs/design.md §2.2 step 8, §2.5)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 7, 3, generator=generator)
    y = torch.softmax(torch.randn(8, 5, generator=generator), -1)
    saliency = torch.rand(8, 7, generator=generator)
    easy = torch.tensor([False, True, False, True, True, False, False, True])
    out = horizontal_mix(x, y, saliency, easy, 0.05)
    assert out.mask[easy].any(dim=1).all(), 'the example must mix every easy row'
    for i in range(8):
        if easy[i]:
            kept = ~out.mask[i]
            assert torch.equal(out.x[i][kept], x[i][kept]), f'row {i} must still hold sample {i}'
        else:
            assert torch.equal(out.x[i], x[i])
            assert torch.equal(out.y[i], y[i])
            assert not out.mask[i].any()
            assert out.partner[i].item() == i


def _first_reference_batch():
    """B = 4, T = 3, rho = .125, easy = [T, F, T, F]; the first easy sample is 0.

    S[0] = [.25, 0, 0], S[1] = [0, .75, 0], S[2] = [.75, .5, 0], S[3] = [0, .5, .75].
    G[0] = [0, .625, .75, 1.0], G[2] = [0, .125, 0, .625]; the unique optimum is sigma(0) = 2,
    sigma(2) = 3 (total 1.375).
    Row 0 mask: S[2] - S[0] = [.5, .5, 0] -> [T, T, F]; a = 0, b = 1.25 -> y_mix[0] = y[2].
    Row 2, 'own':   S[3] - S[2] = [-.75, 0, .75]  -> [F, F, T]; a = 1.25, b = .75.
    Row 2, 'first': S[3] - S[0] = [-.25, .5, .75] -> [F, T, T]; a = S[2, 0] = .75 (own saliency),
                    b = 1.25.  Both sums are 2: y_mix[2] = .625 y2 + .375 y3 ('own'),
                    .375 y2 + .625 y3 ('first').
    """
    saliency = _t([[0.25, 0.0, 0.0], [0.0, 0.75, 0.0], [0.75, 0.5, 0.0], [0.0, 0.5, 0.75]])
    x = torch.arange(24, dtype=torch.float32).reshape(4, 3, 2)
    y = torch.eye(4)
    easy = torch.tensor([True, False, True, False])
    return x, y, saliency, easy


def test_mix_reference_first_masks_every_easy_row_against_the_first_easy_sample():
    """mask_reference='first' (released code): M built from S[sigma(i)] - S[first easy] > rho,
    while Eq. 11 still weighs with each row's own saliency."""
    x, y, saliency, easy = _first_reference_batch()
    out = horizontal_mix(x, y, saliency, easy, RHO, mask_reference='first')
    assert out.partner.tolist() == [2, 1, 3, 3]
    assert out.mask.tolist() == [[True, True, False], [False] * 3, [False, True, True], [False] * 3]
    expected_x = x.clone()
    expected_x[0, :2] = x[2, :2]
    expected_x[2, 1:] = x[3, 1:]
    assert torch.equal(out.x, expected_x)
    assert torch.equal(out.y, _t([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0.375, 0.625], [0, 0, 0, 1]]))


def test_mix_reference_own_is_eq9_and_differs_from_first():
    x, y, saliency, easy = _first_reference_batch()
    own = horizontal_mix(x, y, saliency, easy, RHO)  # the default is 'own'
    first = horizontal_mix(x, y, saliency, easy, RHO, mask_reference='first')
    assert own.partner.tolist() == first.partner.tolist() == [2, 1, 3, 3]
    assert own.mask.tolist() == [[True, True, False], [False] * 3, [False, False, True], [False] * 3]
    assert torch.equal(own.y[2], _t([0, 0, 0.625, 0.375]))
    assert not torch.equal(own.mask, first.mask)
    assert not torch.equal(own.x, first.x)


def test_mix_gradient_flows_to_the_row_and_its_partner():
    """Eq. 10 is differentiable: d out.x[0] reaches x[0] at kept tokens and x[1] at the replaced one."""
    x, y, saliency, easy = _hand_batch()
    x.requires_grad_()
    out = horizontal_mix(x, y, saliency, easy, RHO)
    out.x[0].sum().backward()
    kept = torch.tensor([1.0, 1.0, 0.0, 1.0]).unsqueeze(-1).expand(4, 2)
    assert torch.equal(x.grad[0], kept)
    assert torch.equal(x.grad[1], 1.0 - kept)
    assert torch.equal(x.grad[2], torch.zeros(4, 2))


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_mix_half_precision_keeps_dtypes_and_values(dtype):
    x, y, saliency, easy = _hand_batch(prefix=1, dtype=dtype)
    out = horizontal_mix(x, y, saliency, easy, RHO, num_prefix_tokens=1)
    assert out.x.dtype == dtype and out.y.dtype == dtype
    expected = x.clone()
    expected[0, 3] = x[1, 3]
    assert torch.equal(out.x, expected)
    assert torch.equal(out.y, _t([[0.75, 0.25], [0.0, 1.0], [0.5, 0.5]], dtype))
    assert out.mask.tolist() == [[False, False, True, False], [False] * 4, [False] * 4]


# ---------------------------------------------------------------------------------------------
# horizontal_mix against an independent implementation of the paper's equations

def reference_mix(x, y, saliency, easy, rho, prefix, mask_reference, partner=None):
    """Eq. 6, 7, 9, 10, 11 token by token in float64, Hungarian via scipy on the easy-row matrix.

    Returns (x, y, mask, partner, gain, columns) where gain is the B' x B matrix and columns the
    solver's columns; `partner` may be given to evaluate Eq. 9-11 for another assignment.
    """
    batch_size, num_tokens, _ = x.shape
    num_mixable = num_tokens - prefix
    s = saliency.double().tolist()
    easy_rows = [i for i in range(batch_size) if bool(easy[i])]
    gain = np.zeros((len(easy_rows), batch_size))
    for r, i in enumerate(easy_rows):
        for j in range(batch_size):
            gain[r, j] = sum(max(s[j][t] - s[i][t] - rho, 0.0) for t in range(num_mixable))
    columns = np.zeros(0, dtype=np.int64)
    if easy_rows:
        rows, columns = linear_sum_assignment(gain, maximize=True)
        assert list(rows) == list(range(len(easy_rows)))
    if partner is None:
        partner = list(range(batch_size))
        for r, i in enumerate(easy_rows):
            partner[i] = int(columns[r])
    x_out, y_out = x.clone(), y.clone()
    mask = torch.zeros(batch_size, num_mixable, dtype=torch.bool)
    for i in easy_rows:
        j = partner[i]
        ref = easy_rows[0] if mask_reference == 'first' else i
        a = b = 0.0
        for t in range(num_mixable):
            if s[j][t] - s[ref][t] > rho:
                mask[i, t] = True
                x_out[i, prefix + t] = x[j, prefix + t]
                b += s[j][t]
            else:
                a += s[i][t]
        if a + b > 0:
            y_out[i] = (a / (a + b) * y[i].double() + b / (a + b) * y[j].double()).to(y.dtype)
    return x_out, y_out, mask, partner, gain, columns


def _optimum_is_unique(gain, columns, margin=1e-4):
    """True when every other assignment is worse by more than `margin` (forbid each chosen entry
    in turn: any other assignment avoids at least one of them)."""
    best = gain[np.arange(len(columns)), columns].sum()
    for r, c in enumerate(columns):
        forbidden = gain.copy()
        forbidden[r, c] = -1e6
        rows, cols = linear_sum_assignment(forbidden, maximize=True)
        if forbidden[rows, cols].sum() > best - margin:
            return False
    return True


@pytest.mark.parametrize('mask_reference', ['own', 'first'])
@pytest.mark.parametrize('seed', range(8))
def test_mix_matches_reference_implementation(seed, mask_reference):
    generator = torch.Generator().manual_seed(seed)
    checked_unique = 0
    for case in range(4):
        batch_size = int(torch.randint(1, 17, (1,), generator=generator))
        num_mixable = int(torch.randint(1, 21, (1,), generator=generator))
        prefix = case % 3
        scale = 2.0 / num_mixable  # attention-like saliency: mean 1 / T
        rho = [0.0, 0.05, 0.2, 0.5][case] * scale
        x = torch.randn(batch_size, prefix + num_mixable, 3, generator=generator)
        y = torch.softmax(torch.randn(batch_size, 5, generator=generator), -1)
        saliency = torch.rand(batch_size, num_mixable, generator=generator) * scale
        easy = torch.rand(batch_size, generator=generator) < [0.0, 0.5, 0.8, 1.0][(seed + case) % 4]

        out = horizontal_mix(x, y, saliency, easy, rho, num_prefix_tokens=prefix,
                             mask_reference=mask_reference)
        _, _, _, ref_partner, gain, columns = reference_mix(x, y, saliency, easy, rho, prefix, mask_reference)
        easy_rows = torch.nonzero(easy).flatten().tolist()
        # Eq. 7: the returned assignment is optimal (and injective) under the reference gains
        chosen = [out.partner[i].item() for i in easy_rows]
        assert len(set(chosen)) == len(chosen)
        if easy_rows:
            best = gain[np.arange(len(easy_rows)), columns].sum()
            assert math.isclose(gain[np.arange(len(easy_rows)), chosen].sum(), best, rel_tol=1e-5, abs_tol=1e-6)
            if _optimum_is_unique(gain, columns):
                assert out.partner.tolist() == ref_partner
                checked_unique += 1
        # Eq. 9-11 evaluated at the partners returned
        ref_x, ref_y, ref_mask, _, _, _ = reference_mix(
            x, y, saliency, easy, rho, prefix, mask_reference, partner=out.partner.tolist())
        assert torch.equal(out.mask, ref_mask)
        assert torch.equal(out.x, ref_x)
        torch.testing.assert_close(out.y, ref_y)
        assert all(out.partner[i].item() == i for i in range(batch_size) if not easy[i])
    assert checked_unique > 0, 'the random data must include a case with a unique optimum'


# ---------------------------------------------------------------------------------------------
# horizontal_mix argument checks (docs/design.md §2.5: ValueError naming the argument and the shapes)

def _valid_args(**overrides):
    args = dict(x=torch.randn(3, 5, 2), y=torch.full((3, 4), 0.25), saliency=torch.rand(3, 4),
                easy=torch.tensor([True, False, True]), rho=0.1, num_prefix_tokens=1)
    args.update(overrides)
    return args


def test_mix_valid_args_are_accepted():
    """Guard for the parametrised failures below: the baseline arguments are valid."""
    horizontal_mix(**_valid_args())


@pytest.mark.parametrize('y, match', [
    (_t([[0.5, 0.25, 0.0, 0.0]] * 3), 'y must hold soft targets'),
    (_t([[1.5, -0.5, 0.0, 0.0]] * 3), 'y must hold soft targets'),
    (_t([[float('nan'), 1.0, 0.0, 0.0]] * 3), 'y must hold soft targets'),
    (_t([[float('inf'), 1.0, 0.0, 0.0]] * 3), 'y must hold soft targets'),
])
def test_mix_rejects_targets_that_are_not_soft_labels(y, match):
    with pytest.raises(ValueError, match=match):
        horizontal_mix(**_valid_args(y=y))


def test_mix_rejects_invalid_targets_even_without_easy_samples():
    with pytest.raises(ValueError, match='y must hold soft targets'):
        horizontal_mix(**_valid_args(y=torch.full((3, 4), 0.5), easy=torch.zeros(3, dtype=torch.bool)))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_mix_leaves_a_sample_with_non_finite_saliency_out_instead_of_raising(bad):
    """A non-finite saliency (e.g. a float16 overflow) must not end the run: that sample is not mixed and
    is nobody's partner (README "Reliability")."""
    saliency = torch.rand(3, 4)
    saliency[1, 2] = bad
    mixed = horizontal_mix(**_valid_args(saliency=saliency))
    assert mixed.partner[1] == 1 and not mixed.mask[1].any()
    assert 1 not in mixed.partner[[0, 2]].tolist()


@pytest.mark.parametrize('overrides, match', [
    ({'x': torch.randn(3, 5)}, r'x must have shape \(B, N, D\), got \(3, 5\)'),
    ({'x': torch.ones(3, 5, 2, dtype=torch.int64)}, 'x must be a floating-point'),
    ({'y': torch.full((2, 4), 0.25)}, r'y must have shape \(B, C\) with B = 3, got \(2, 4\)'),
    ({'y': torch.full((3,), 1.0)}, r'y must have shape \(B, C\) with B = 3, got \(3,\)'),
    ({'y': torch.ones(3, 4, dtype=torch.int64)}, 'y must be a floating-point'),
    ({'saliency': torch.rand(3, 5)}, r'saliency must have shape \(B, T\) = \(3, 4\), got \(3, 5\)'),
    ({'saliency': torch.rand(2, 4)}, r'saliency must have shape \(B, T\) = \(3, 4\), got \(2, 4\)'),
    ({'saliency': torch.ones(3, 4, dtype=torch.int64)}, 'saliency must be a floating-point'),
    ({'easy': torch.tensor([1, 0, 1])}, 'easy must be a bool tensor, got dtype torch.int64'),
    ({'easy': torch.tensor([True, False])}, r'easy must have shape \(B,\) = \(3,\), got \(2,\)'),
    ({'easy': torch.ones(3, 1, dtype=torch.bool)}, r'easy must have shape \(B,\) = \(3,\), got \(3, 1\)'),
    ({'rho': -0.1}, 'rho must be a finite number >= 0'),
    ({'rho': float('nan')}, 'rho must be a finite number >= 0'),
    ({'rho': True}, 'rho must be a finite number >= 0'),
    ({'mask_reference': 'last'}, 'mask_reference must be one of'),
    ({'num_prefix_tokens': 5}, r'num_prefix_tokens must be in \[0, N\) = \[0, 5\)'),
    ({'num_prefix_tokens': -1}, 'num_prefix_tokens'),
])
def test_mix_rejects_bad_shapes_and_dtypes(overrides, match):
    with pytest.raises(ValueError, match=match):
        horizontal_mix(**_valid_args(**overrides))


@pytest.mark.parametrize('name', ['y', 'saliency', 'easy'])
def test_mix_rejects_an_argument_on_another_device(name):
    """Only CPU is available here: the 'meta' device stands in for an accelerator."""
    args = _valid_args()
    args[name] = args[name].to('meta')
    with pytest.raises(ValueError, match=rf'{name} is on meta but x is on cpu'):
        horizontal_mix(**args)


# ---------------------------------------------------------------------------------------------
# horizontal_mix makes one device-to-host copy (docs/design.md §2.2, §2.5, §9)

@pytest.mark.parametrize('easy', [[True, False, True, True, False, True], [False] * 6],
                         ids=['some-easy', 'none-easy'])
def test_mix_makes_exactly_one_host_copy(monkeypatch, easy):
    """The gain matrix, the easy flags and the value checks travel to the host in one `.cpu()`;
    nothing else reads tensor values on the host (no item/tolist/bool/int/float/index).
    The only `.numpy()` is on that copy, and the only `.to(cpu)` moves tensors built from the
    solver's numpy output (the partner indices) back to x's device: on an accelerator that is a
    host-to-device copy, which does not wait for the device."""
    batch_size = 6
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 1 + 5, 4, generator=generator)
    y = one_hot_target(torch.tensor([0, 1, 2, 0, 1, 2]), 3, smoothing=0.1)  # built before patching
    saliency = torch.rand(batch_size, 5, generator=generator)
    easy = torch.tensor(easy)

    calls = {name: [] for name in ('cpu', 'numpy', 'item', 'tolist', '__bool__', '__int__', '__float__',
                                   '__index__', 'to_cpu')}
    from_numpy_results = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            calls[name].append((self, result))
            return result
        return wrapper

    original_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        targets = list(args) + [kwargs.get('device')]
        to_cpu = any((isinstance(a, (str, torch.device)) and torch.device(a).type == 'cpu')
                     or (isinstance(a, torch.Tensor) and a.device.type == 'cpu') for a in targets)
        if to_cpu:
            calls['to_cpu'].append((self, None))
        return original_to(self, *args, **kwargs)

    original_from_numpy = torch.from_numpy

    def recording_from_numpy(array):
        result = original_from_numpy(array)
        from_numpy_results.append(result)
        return result

    for name in ('cpu', 'numpy', 'item', 'tolist', '__bool__', '__int__', '__float__', '__index__'):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    monkeypatch.setattr(torch.Tensor, 'to', counting_to)
    monkeypatch.setattr(torch, 'from_numpy', recording_from_numpy)
    out = horizontal_mix(x, y, saliency, easy, 0.01, num_prefix_tokens=1)
    monkeypatch.undo()

    assert len(calls['cpu']) == 1
    copied = calls['cpu'][0][1]
    assert [self is copied for self, _ in calls['numpy']] == [True], 'numpy() only on the one host copy'
    for name in ('item', 'tolist', '__bool__', '__int__', '__float__', '__index__'):
        assert calls[name] == [], f'{name} reads a tensor value on the host'
    assert all(any(self is made for made in from_numpy_results) for self, _ in calls['to_cpu']), \
        '.to(cpu) may only move host-built index tensors back to the device'
    assert out.mask.any() == easy.any(), 'the example must mix exactly when some sample is easy'


# =============================================================================================
# select_salient_tokens (VTM memory, paper Sec. 3.4)

def test_select_returns_kappa_most_salient_tokens_most_salient_first_after_prefix():
    """P = 1, T = 4, kappa = 2: row 0 S = [.125, .5, .25, .0625] -> tokens 1, 2 -> x[0, 2], x[0, 3];
    row 1 S = [.5, 0, .25, .75] -> tokens 3, 0 -> x[1, 4], x[1, 1]."""
    x = torch.arange(20, dtype=torch.float32).reshape(2, 5, 2)
    saliency = _t([[0.125, 0.5, 0.25, 0.0625], [0.5, 0.0, 0.25, 0.75]])
    memory = select_salient_tokens(x, saliency, 2, num_prefix_tokens=1)
    assert memory.shape == (2, 2, 2)
    assert torch.equal(memory, torch.stack([x[0, [2, 3]], x[1, [4, 1]]]))


def test_select_without_prefix_gathers_at_the_token_index():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 4, 2)
    memory = select_salient_tokens(x, _t([[0.25, 0.0, 0.5, 0.125]]), 3)
    assert torch.equal(memory, x[:, [2, 0, 3]])


def test_select_kappa_equal_to_t_returns_every_token_sorted():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 3, 2)
    memory = select_salient_tokens(x, _t([[0.25, 0.5, 0.125]]), 3)
    assert torch.equal(memory, x[:, [1, 0, 2]])


def test_select_gradient_flows_into_the_selected_tokens():
    x = torch.randn(2, 5, 3, requires_grad=True)
    saliency = _t([[0.125, 0.5, 0.25, 0.0625], [0.5, 0.0, 0.25, 0.75]])
    select_salient_tokens(x, saliency, 2, num_prefix_tokens=1).sum().backward()
    expected = torch.zeros(2, 5, 3)
    expected[0, [2, 3]] = 1.0
    expected[1, [4, 1]] = 1.0
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize('kappa', [0, 5, -1, True, 2.0])
def test_select_rejects_kappa_outside_1_to_t(kappa):
    """docs/design.md §2.5: ValueError unless 1 <= kappa <= T (T = 4 here; bool and float are not ints)."""
    with pytest.raises(ValueError, match='kappa'):
        select_salient_tokens(torch.randn(2, 5, 3), torch.rand(2, 4), kappa, num_prefix_tokens=1)


def test_select_rejects_saliency_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r'saliency must have shape \(B, T\) = \(2, 4\), got \(2, 5\)'):
        select_salient_tokens(torch.randn(2, 5, 3), torch.rand(2, 5), 1, num_prefix_tokens=1)


# =============================================================================================
# soft_cross_entropy (ScoreNet difficulty, paper Eq. 1)

def test_soft_cross_entropy_with_one_hot_targets_equals_cross_entropy():
    logits, labels = torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(labels, 5).float()),
                               F.cross_entropy(logits, labels, reduction='none'))


def test_soft_cross_entropy_with_soft_targets_equals_cross_entropy_with_probabilities():
    logits, target = torch.randn(4, 5), torch.softmax(torch.randn(4, 5), -1)
    torch.testing.assert_close(soft_cross_entropy(logits, target),
                               F.cross_entropy(logits, target, reduction='none'))


def test_soft_cross_entropy_hand_value():
    """Uniform logits over 4 classes: CE = log 4 for any target distribution."""
    loss = soft_cross_entropy(torch.zeros(2, 4), _t([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]]))
    torch.testing.assert_close(loss, torch.full((2,), math.log(4)))


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_soft_cross_entropy_is_float32_for_half_logits(dtype):
    logits = torch.randn(3, 4)
    loss = soft_cross_entropy(logits.to(dtype), torch.eye(4)[:3].to(dtype))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.to(dtype).float(), torch.arange(3), reduction='none'))


def test_soft_cross_entropy_is_differentiable_in_the_logits():
    logits = torch.randn(3, 4, requires_grad=True)
    soft_cross_entropy(logits, torch.eye(4)[:3]).sum().backward()
    torch.testing.assert_close(logits.grad, torch.softmax(logits.detach(), -1) - torch.eye(4)[:3])


def test_soft_cross_entropy_rejects_mismatched_target():
    with pytest.raises(ValueError, match=r'target must have shape \(B, C\) = \(3, 4\), got \(3, 5\)'):
        soft_cross_entropy(torch.randn(3, 4), torch.rand(3, 5))


# =============================================================================================
# one_hot_target and as_soft_target (tokenmixup/targets.py; docs/design.md §2)

def test_one_hot_target_values():
    target = one_hot_target(torch.tensor([2, 0]), 3)
    assert target.dtype == torch.float32
    assert torch.equal(target, _t([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


def test_one_hot_target_label_smoothing_values():
    """timm's convention: true class 1 - s + s / C, others s / C; s = .5, C = 4 -> .625 and .125."""
    target = one_hot_target(torch.tensor([1, 3]), 4, smoothing=0.5)
    assert torch.equal(target, _t([[0.125, 0.625, 0.125, 0.125], [0.125, 0.125, 0.125, 0.625]]))


@pytest.mark.parametrize('labels', [torch.tensor([0, 3]), torch.tensor([-1, 0])])
def test_one_hot_target_rejects_out_of_range_labels_on_cpu(labels):
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'):
        one_hot_target(labels, 3)


@pytest.mark.parametrize('labels', [torch.tensor([0.0, 1.0]), torch.tensor([True, False]),
                                    torch.tensor([[0, 1]])])
def test_one_hot_target_rejects_labels_that_are_not_1d_integers(labels):
    with pytest.raises(ValueError, match='labels must be a'):
        one_hot_target(labels, 3)


def test_as_soft_target_one_hot_encodes_hard_labels():
    labels = torch.tensor([1, 0, 2])
    assert torch.equal(as_soft_target(labels, 3, smoothing=0.5), one_hot_target(labels, 3, smoothing=0.5))


def test_as_soft_target_returns_soft_targets_as_they_are():
    target = torch.softmax(torch.randn(2, 10), -1)
    assert as_soft_target(target, 10) is target


def test_as_soft_target_rejects_soft_targets_with_another_class_count():
    with pytest.raises(ValueError, match='target has 7 classes, model has 10'):
        as_soft_target(torch.rand(2, 7), 10)


# ---------------------------------------------------------------------------------------------
# the composable equations validate their arguments too (docs/design.md §2.5: every function validates)

_S = torch.full((2, 3), 1 / 3)


@pytest.mark.parametrize('call, match', [
    (lambda: tmf.pair_gain(_S, _S[:1], 0.0), 's_partner must have shape'),
    (lambda: tmf.pair_gain(_S, _S, -1.0), 'rho must be a finite number'),
    (lambda: tmf.replacement_mask(_S, _S[:, :2], 0.0), 's_partner must have shape'),
    (lambda: tmf.replacement_mask(_S.long(), _S.long(), 0.0), 's_own must be a floating-point'),
    (lambda: tmf.mix_targets(torch.eye(3), _S, _S, torch.zeros(2, 3, dtype=torch.bool), torch.arange(2)),
     'y must have shape'),
    (lambda: tmf.mix_targets(torch.eye(2), _S, _S, torch.zeros(2, 3), torch.arange(2)), 'mask must be a bool'),
    (lambda: tmf.mix_targets(torch.eye(2), _S, _S, torch.zeros(2, 3, dtype=torch.bool), torch.arange(3)),
     'partner must have shape'),
])
def test_equation_helpers_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
