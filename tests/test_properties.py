"""Property tests of the functional API (docs/design.md §2.1, §2.2, §2.5; paper Eq. 3, 6, 7, 9, 10, 11).

`hypothesis` draws the shapes (batch 1..12, prefix 0..3, a few tokens, width and classes), rho in
[0, 0.05] (0 and the dyadic 1/32 included, so that differences equal to rho occur), the kind of soft
targets (softmax rows or one-hot), the kind of saliency (uniform, row-normalised, dyadic with ties and
zeros, or read from a softmax attention map), the easy mask, `mask_reference` and the ablation switches
of `horizontal_mix`. The tensor values come from a torch generator seeded by a drawn integer, and torch's
default generator (which the random ablations draw from) is seeded from it too, so every failure replays.

Each test states one rule that must hold for every input; the hand examples and the reference
re-implementation live in tests/test_functional.py.
"""
import itertools

import torch
from hypothesis import given, settings, strategies as st

from tokenmixup.functional import attention_saliency, horizontal_mix, saliency_gain, select_salient_tokens

# modest example counts and no example database (nothing written into the repository)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, database=None)
TARGET_TOLERANCE = 1e-5

SEEDS = st.integers(0, 2 ** 31 - 1)
RHOS = st.one_of(st.just(0.0), st.sampled_from([0.03125, 0.05]), st.floats(0.0, 0.05, allow_nan=False))
SALIENCY_KINDS = ('uniform', 'normalised', 'dyadic', 'attention')


def _saliency(kind: str, batch_size: int, num_prefix: int, num_mixable: int, generator) -> torch.Tensor:
    """(B, T) non-negative float32 saliency of one of the drawn kinds."""
    shape = (batch_size, num_mixable)
    if kind == 'uniform':
        return torch.rand(shape, generator=generator)
    if kind == 'normalised':
        values = torch.rand(shape, generator=generator) + 1e-3
        return values / values.sum(dim=-1, keepdim=True)
    if kind == 'dyadic':  # multiples of 1/32 in [0, 0.25): ties, zeros and differences exactly equal to rho
        return torch.randint(0, 8, shape, generator=generator).float() / 32
    num_tokens = num_prefix + num_mixable
    logits = torch.randn((batch_size, 2, num_tokens, num_tokens), generator=generator)
    return attention_saliency(logits.softmax(dim=-1), num_prefix, 'cls' if num_prefix else 'mean')


@st.composite
def mix_cases(draw, max_batch: int = 12, max_easy: int = None, max_tokens: int = 6):
    """Arguments of `horizontal_mix`: (x, y, saliency, easy, rho, keywords)."""
    batch_size = draw(st.integers(1, max_batch))
    num_prefix = draw(st.integers(0, 3))
    num_mixable = draw(st.integers(1, max_tokens))
    dim = draw(st.integers(1, 4))
    num_classes = draw(st.integers(1, 5))
    easy = draw(st.lists(st.booleans(), min_size=batch_size, max_size=batch_size))
    if max_easy is not None:
        easy = [flag and sum(easy[:index + 1]) <= max_easy for index, flag in enumerate(easy)]
    rho = draw(RHOS)
    target_kind = draw(st.sampled_from(('softmax', 'one_hot')))
    saliency_kind = draw(st.sampled_from(SALIENCY_KINDS))
    keywords = dict(
        num_prefix_tokens=num_prefix,
        mask_reference=draw(st.sampled_from(('own', 'first'))),
        pairing=draw(st.sampled_from(('hungarian', 'random'))),
        token_selection=draw(st.sampled_from(('saliency', 'random'))),
        label_mixing=draw(st.sampled_from(('saliency', 'count'))),
    )
    seed = draw(SEEDS)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the random ablations draw from torch's default generator
    x = torch.randn((batch_size, num_prefix + num_mixable, dim), generator=generator)
    if target_kind == 'softmax':
        y = (3 * torch.randn((batch_size, num_classes), generator=generator)).softmax(dim=-1)
    else:
        labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
        y = torch.nn.functional.one_hot(labels, num_classes).float()
    saliency = _saliency(saliency_kind, batch_size, num_prefix, num_mixable, generator)
    return x, y, saliency, torch.tensor(easy, dtype=torch.bool), rho, keywords


def _mix(case):
    x, y, saliency, easy, rho, keywords = case
    x_in, y_in, s_in, easy_in = x.clone(), y.clone(), saliency.clone(), easy.clone()
    result = horizontal_mix(x, y, saliency, easy, rho, **keywords)
    # the inputs are never written to
    assert torch.equal(x, x_in) and torch.equal(y, y_in) and torch.equal(saliency, s_in) and torch.equal(easy, easy_in)
    assert result.x.shape == x.shape and result.y.shape == y.shape and result.y.dtype == y.dtype
    assert result.mask.shape == saliency.shape and result.mask.dtype == torch.bool
    assert result.partner.shape == easy.shape and result.partner.dtype == torch.long
    return result


# =============================================================================================
# horizontal_mix: targets (Eq. 11, docs/design.md §2.2 step 7)

@PROPERTY_SETTINGS
@given(mix_cases())
def test_mixed_targets_are_convex_combinations_of_own_and_partner_target(case):
    """Eq. 11 (§2.2 step 7): every mixed row is w y_i + (1 - w) y_sigma(i) with w in [0, 1]: non-negative,
    summing to 1, on the segment between the row's own and its partner's pre-mix target."""
    _, y, _, _, _, _ = case
    result = _mix(case)
    own, other, mixed = y.double(), y[result.partner].double(), result.y.double()
    assert (mixed >= -TARGET_TOLERANCE).all()
    assert torch.allclose(mixed.sum(dim=-1), torch.ones(len(y), dtype=torch.float64), atol=TARGET_TOLERANCE)
    direction = own - other
    for row in range(len(y)):
        length = direction[row].dot(direction[row])
        if length < 1e-12:  # the two targets coincide: the row must be that target
            assert torch.allclose(mixed[row], own[row], atol=TARGET_TOLERANCE)
            continue
        weight = (mixed[row] - other[row]).dot(direction[row]) / length
        assert -TARGET_TOLERANCE <= weight <= 1 + TARGET_TOLERANCE, (row, float(weight))
        assert torch.allclose(mixed[row], other[row] + weight * direction[row], atol=TARGET_TOLERANCE), row


@PROPERTY_SETTINGS
@given(mix_cases())
def test_mixed_target_weight_is_the_saliency_or_token_share_kept(case):
    """Eq. 11 (§2.2 step 7): w = a / (a + b), a = own saliency kept, b = partner saliency taken (each row's own
    saliency even with mask_reference='first'); label_mixing='count' uses token counts; a + b = 0 keeps y_i."""
    _, y, saliency, _, _, keywords = case
    result = _mix(case)
    mask = result.mask.double()
    if keywords['label_mixing'] == 'count':
        own_share, partner_share = torch.ones_like(mask), torch.ones_like(mask)
    else:
        own_share, partner_share = saliency.double(), saliency[result.partner].double()
    kept = (own_share * (1 - mask)).sum(dim=-1)
    taken = (partner_share * mask).sum(dim=-1)
    total = kept + taken
    weight = torch.where(total > 0, kept / total.clamp_min(1e-300), torch.ones_like(total)).unsqueeze(-1)
    expected = weight * y.double() + (1 - weight) * y[result.partner].double()
    assert torch.allclose(result.y.double(), expected, atol=TARGET_TOLERANCE)


# =============================================================================================
# horizontal_mix: what is left alone (§2.2 steps 4, 6 and 8)

@PROPERTY_SETTINGS
@given(mix_cases())
def test_prefix_tokens_and_rows_that_are_not_easy_are_unchanged(case):
    """§2.2 steps 6 and 8: prefix tokens are never mixed, and rows that are not easy keep their tokens and
    target bit for bit, have an all-False mask and are their own partner."""
    x, y, _, easy, _, keywords = case
    prefix = keywords['num_prefix_tokens']
    result = _mix(case)
    assert torch.equal(result.x[:, :prefix], x[:, :prefix])
    hard = ~easy
    assert torch.equal(result.x[hard], x[hard])
    assert torch.equal(result.y[hard], y[hard])
    assert not result.mask[hard].any()
    assert torch.equal(result.partner[hard], torch.arange(len(x))[hard])


@PROPERTY_SETTINGS
@given(mix_cases())
def test_partners_of_easy_rows_are_distinct(case):
    """Eq. 7 (§2.2 step 4): the easy rows' partners are distinct columns of the batch (an assignment),
    with both pairing='hungarian' and pairing='random'."""
    _, _, _, easy, _, _ = case
    result = _mix(case)
    partners = result.partner[easy].tolist()
    assert len(set(partners)) == len(partners)
    assert all(0 <= partner < len(easy) for partner in result.partner.tolist())


# =============================================================================================
# horizontal_mix: tokens and mask (Eq. 9-10, §2.2 steps 5-6)

@PROPERTY_SETTINGS
@given(mix_cases())
def test_every_mixed_token_is_the_rows_own_or_its_partners_pre_mix_token(case):
    """Eq. 10 (§2.2 step 6): token t of row i is exactly the partner's pre-mix token where the mask is True and
    the row's own pre-mix token where it is False; nothing is interpolated."""
    x, _, _, _, _, keywords = case
    prefix = keywords['num_prefix_tokens']
    result = _mix(case)
    replaced = result.mask.unsqueeze(-1)
    expected = torch.where(replaced, x[result.partner, prefix:], x[:, prefix:])
    assert torch.equal(result.x[:, prefix:], expected)


@PROPERTY_SETTINGS
@given(mix_cases())
def test_mask_is_eq9_against_the_reference_row_or_a_random_mask_of_the_same_size(case):
    """Eq. 9 (§2.2 step 5): with token_selection='saliency' the mask is S[sigma(i), t] - S[r(i), t] > rho, strictly,
    r(i) = i ('own') or the first easy row ('first'); with 'random' each row replaces as many tokens as that mask."""
    _, _, saliency, easy, rho, keywords = case
    result = _mix(case)
    reference = torch.arange(len(easy))
    if keywords['mask_reference'] == 'first' and easy.any():
        reference = torch.where(easy, easy.nonzero()[0, 0], reference)
    eq9 = (saliency[result.partner].float() - saliency[reference].float() - rho) > 0
    eq9 &= easy.unsqueeze(-1)
    if keywords['token_selection'] == 'saliency':
        assert torch.equal(result.mask, eq9)
    else:
        assert torch.equal(result.mask.sum(dim=-1), eq9.sum(dim=-1))


# =============================================================================================
# horizontal_mix: optimal assignment (Eq. 6-8, §2.2 steps 3-4)

@PROPERTY_SETTINGS
@given(mix_cases(max_batch=6, max_easy=4), st.sampled_from(('own', 'first')))
def test_hungarian_partners_maximise_total_gain_against_brute_force(case, mask_reference):
    """Eq. 7-8 (§2.2 steps 3-4): with pairing='hungarian' the easy rows' partners maximise sum_i G[i, sigma(i)]
    (G of Eq. 6, `saliency_gain`) over every injective map of the B' <= 4 easy rows into the B <= 6 columns."""
    x, y, saliency, easy, rho, keywords = case
    keywords = dict(keywords, pairing='hungarian', mask_reference=mask_reference)
    result = _mix((x, y, saliency, easy, rho, keywords))
    rows = easy.nonzero().flatten().tolist()
    gain = saliency_gain(saliency[rows], saliency, rho).double()
    chosen = sum(float(gain[k, result.partner[row]]) for k, row in enumerate(rows))
    best = max(
        (sum(float(gain[k, column]) for k, column in enumerate(columns))
         for columns in itertools.permutations(range(len(easy)), len(rows))),
        default=0.0)
    assert chosen >= best - 1e-6 * (1 + abs(best)), (chosen, best)


@PROPERTY_SETTINGS
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), RHOS, st.sampled_from(SALIENCY_KINDS), SEEDS)
def test_gain_matrix_is_eq6(num_easy, batch_size, num_mixable, rho, kind, seed):
    """Eq. 6 (§2.2 step 3): G[i, j] = sum_t max(S_all[j, t] - S_easy[i, t] - rho, 0), (B', B), non-negative."""
    generator = torch.Generator().manual_seed(seed)
    s_easy = _saliency(kind, num_easy, 0, num_mixable, generator)
    s_all = _saliency(kind, batch_size, 0, num_mixable, generator)
    gain = saliency_gain(s_easy, s_all, rho)
    expected = (s_all.double()[None] - s_easy.double()[:, None] - rho).clamp_min(0).sum(dim=-1)
    assert gain.shape == (num_easy, batch_size) and gain.dtype == torch.float32
    assert (gain >= 0).all()
    assert torch.allclose(gain.double(), expected, atol=1e-6)


# =============================================================================================
# select_salient_tokens (VTM memory, paper Sec. 3.4) and attention_saliency (Eq. 3, §2.1)

@PROPERTY_SETTINGS
@given(st.integers(1, 12), st.integers(0, 3), st.integers(1, 8), st.data(), st.sampled_from(SALIENCY_KINDS), SEEDS)
def test_select_returns_the_kappa_most_salient_non_prefix_tokens(batch_size, num_prefix, num_mixable, data, kind,
                                                                 seed):
    """Sec. 3.4 (§2.3): the kappa tokens kept for the VTM memory are kappa distinct non-prefix tokens whose
    saliencies are the kappa largest of the row (any of them on ties), most salient first, gathered exactly."""
    kappa = data.draw(st.integers(1, num_mixable), label='kappa')
    generator = torch.Generator().manual_seed(seed)
    saliency = _saliency(kind, batch_size, num_prefix, num_mixable, generator)
    num_tokens = num_prefix + num_mixable
    x = torch.randn((batch_size, num_tokens, 3), generator=generator)
    x[..., 0] = torch.arange(num_tokens, dtype=torch.float32)  # channel 0 names the token
    selected = select_salient_tokens(x, saliency, kappa, num_prefix)
    assert selected.shape == (batch_size, kappa, 3)
    for row in range(batch_size):
        index = selected[row, :, 0].long()
        assert torch.equal(selected[row], x[row, index])
        assert len(set(index.tolist())) == kappa and bool((index >= num_prefix).all())
        chosen = saliency[row, index - num_prefix]
        top = saliency[row].sort(descending=True).values[:kappa]
        assert torch.equal(chosen.sort(descending=True).values, top)  # the same set of values
        assert bool((chosen[:-1] >= chosen[1:]).all())  # most salient first


@PROPERTY_SETTINGS
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 6), st.integers(0, 3), st.integers(1, 6),
       st.sampled_from(('mean', 'cls')), SEEDS)
def test_attention_saliency_of_a_softmax_map_is_its_definition_and_sums_to_at_most_one(
        batch_size, num_heads, num_queries, num_prefix, num_mixable, reduce, seed):
    """Eq. 3 (§2.1): 'mean' is the mean of A[b, h, q, P + t] over heads and queries, 'cls' the mean over heads of
    query row 0; a softmax map's rows sum to 1, so each saliency row sums to at most 1 (exactly 1 with P = 0)."""
    if reduce == 'cls' and num_prefix == 0:
        num_prefix = 1
    num_tokens = num_prefix + num_mixable
    generator = torch.Generator().manual_seed(seed)
    attn = (2 * torch.randn((batch_size, num_heads, num_queries, num_tokens), generator=generator)).softmax(dim=-1)
    saliency = attention_saliency(attn, num_prefix, reduce)
    if reduce == 'mean':
        expected = attn[..., num_prefix:].double().mean(dim=(1, 2))
    else:
        expected = attn[:, :, 0, num_prefix:].double().mean(dim=1)
    assert saliency.shape == (batch_size, num_mixable) and saliency.dtype == torch.float32
    assert torch.allclose(saliency.double(), expected, atol=1e-6)
    assert (saliency >= 0).all()
    sums = saliency.double().sum(dim=-1)
    assert (sums <= 1 + 1e-5).all()
    if num_prefix == 0:
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
