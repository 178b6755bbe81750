""" TokenMixup functional API

Pure tensor functions for the equations of TokenMixup (Choi, Choi & Kim, NeurIPS 2022,
"TokenMixup: Efficient Attention-guided Token-level Data Augmentation for Transformers",
https://arxiv.org/abs/2210.07562). The modules in this package hold parameters and settings and
compose these functions; nothing here knows about a specific model.

Notation: x is (B, N, D) tokens, the first P of which are prefix tokens (CLS, distillation,
registers) that are never mixed; T = N - P. Targets y are (B, C) soft labels.

Host synchronisation: `horizontal_mix` makes exactly one device-to-host copy (the gain matrix for
the Hungarian solver, with the value checks folded into the same copy); `assign_partners` makes one
copy of the matrix it is given. Every other function stays on the device.
"""
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .settings import SALIENCY_REDUCTIONS, SETTING_DEFAULTS, check_settings

__all__ = [
    'HorizontalMix', 'attention_saliency', 'saliency_gain', 'pair_gain', 'assign_partners', 'replacement_mask',
    'mix_targets', 'finite_samples', 'horizontal_mix', 'manifold_mix', 'select_salient_tokens', 'soft_cross_entropy',
]

# Upper bound on the (rows, B, T) float32 intermediate of `saliency_gain`: cache-sized chunks on the CPU
# (1 MiB; about 6x faster than one large tensor at B=128, T=256), large ones (64 MiB) on accelerators,
# where every chunk costs kernel launches.
_GAIN_CHUNK_ELEMENTS_CPU = 1 << 18
_GAIN_CHUNK_ELEMENTS = 1 << 24


class HorizontalMix(NamedTuple):
    """Result of `horizontal_mix`.

    x: (B, N, D) tokens after mixing; y: (B, C) mixed targets; mask: (B, T) bool, True where a token
    was replaced (all False on rows that were not mixed); partner: (B,) long, the sample each row
    took tokens from (its own index on rows that are not easy).
    """
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    partner: torch.Tensor


# ---------------------------------------------------------------------------------------------
# argument checks: every message names the argument, what was expected and what was received

def _require_tensor(name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(value).__name__}')


def _require_shape(name: str, tensor: torch.Tensor, expected: str, ok: bool) -> None:
    if not ok:
        raise ValueError(f'{name} must have shape {expected}, got {tuple(tensor.shape)}')


def _require_float(name: str, tensor: torch.Tensor) -> None:
    if not tensor.is_floating_point():
        raise ValueError(f'{name} must be a floating-point tensor, got dtype {tensor.dtype}')


def _require_same_device(reference_name: str, reference: torch.Tensor, **others: torch.Tensor) -> None:
    for name, tensor in others.items():
        if tensor.device != reference.device:
            raise ValueError(f'{name} is on {tensor.device} but {reference_name} is on {reference.device}')


def _check_prefix(num_prefix_tokens, num_tokens: int) -> int:
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int):
        raise ValueError(f'num_prefix_tokens must be an int, got {num_prefix_tokens!r}')
    if not 0 <= num_prefix_tokens < num_tokens:
        raise ValueError(
            f'num_prefix_tokens must be in [0, N) = [0, {num_tokens}) so that at least one token can be '
            f'mixed, got {num_prefix_tokens}')
    return num_prefix_tokens


def _setting(name: str, value):
    """A TokenMixup setting passed to a function, checked by the declaration's validator."""
    return check_settings({name: value})[name]


def _check_matching_pair(first_name: str, first, second_name: str, second, layout: str) -> None:
    """Two 2-D floating-point tensors of one shape (`layout`, e.g. '(B, T)') on one device."""
    _require_tensor(first_name, first)
    _require_tensor(second_name, second)
    _require_shape(first_name, first, layout, first.ndim == 2)
    _require_shape(second_name, second, f'{layout} = {tuple(first.shape)}', second.shape == first.shape)
    _require_float(first_name, first)
    _require_float(second_name, second)
    _require_same_device(first_name, first, **{second_name: second})


def _check_saliency_pair(s_own, s_partner) -> None:
    _check_matching_pair('s_own', s_own, 's_partner', s_partner, '(B, T)')


def _target_tolerance(dtype: torch.dtype) -> float:
    """How far a row of soft targets in `dtype` may sum away from 1."""
    return max(1e-4, 4 * torch.finfo(dtype).eps)


# ---------------------------------------------------------------------------------------------
# the equations

def attention_saliency(
        attn: torch.Tensor,
        num_prefix_tokens: int = 0,
        reduce: str = SETTING_DEFAULTS['saliency'],
) -> torch.Tensor:
    """Token saliency from self-attention probabilities (1-step rollout, paper Eq. 2-3 with l = 0).

    Args:
        attn: (B, H, Q, N) attention probabilities of the block that consumes the tokens
            (queries Q, keys N). `reduce='cls'` reads only query row 0, so Q = 1 suffices.
        num_prefix_tokens: P, the leading tokens that are not scored.
        reduce: 'mean' averages over heads and all Q queries (paper Eq. 3); 'cls' averages the
            CLS query row (query 0) over heads and needs P >= 1.

    Returns:
        (B, N - P) float32 saliency of the non-prefix tokens, without gradient.
    """
    _require_tensor('attn', attn)
    _require_shape('attn', attn, '(B, H, Q, N)', attn.ndim == 4 and attn.shape[2] >= 1)
    _require_float('attn', attn)
    if reduce not in SALIENCY_REDUCTIONS:
        raise ValueError(f'reduce must be one of {SALIENCY_REDUCTIONS}, got {reduce!r}')
    prefix = _check_prefix(num_prefix_tokens, attn.shape[-1])
    attn = attn.detach()
    if reduce == 'cls':
        if prefix < 1:
            raise ValueError("reduce='cls' reads the CLS query row and needs num_prefix_tokens >= 1, got 0")
        return attn[:, :, 0, prefix:].mean(dim=1, dtype=torch.float32)
    return attn[..., prefix:].mean(dim=(1, 2), dtype=torch.float32)


def _saliency_excess(s_source: torch.Tensor, s_target: torch.Tensor, rho: float) -> torch.Tensor:
    """S_source - S_target - rho in float32: positive where a token is worth taking (Eq. 6 and 9)."""
    return s_source.float() - s_target.float() - rho


def saliency_gain(s_easy: torch.Tensor, s_all: torch.Tensor, rho: float) -> torch.Tensor:
    """Saliency gain of every (easy sample, partner) pair (paper Eq. 6).

    G[i, j] = sum_t max(s_all[j, t] - s_easy[i, t] - rho, 0).

    Args:
        s_easy: (B', T) saliency of the samples that may receive tokens.
        s_all: (B, T) saliency of every candidate partner.
        rho: minimum per-token saliency gain, >= 0.

    Returns:
        (B', B) float32 gain matrix.
    """
    _require_tensor('s_easy', s_easy)
    _require_tensor('s_all', s_all)
    _require_shape('s_all', s_all, '(B, T)', s_all.ndim == 2)
    _require_shape('s_easy', s_easy, f"(B', T) with T = {s_all.shape[-1]}",
                   s_easy.ndim == 2 and s_easy.shape[1] == s_all.shape[1])
    _require_float('s_easy', s_easy)
    _require_float('s_all', s_all)
    _require_same_device('s_all', s_all, s_easy=s_easy)
    rho = _setting('rho', rho)

    num_easy, num_tokens = s_easy.shape
    batch_size = s_all.shape[0]
    s_easy, s_all = s_easy.detach(), s_all.detach()
    chunk_elements = _GAIN_CHUNK_ELEMENTS_CPU if s_all.device.type == 'cpu' else _GAIN_CHUNK_ELEMENTS
    rows_per_chunk = max(1, chunk_elements // max(1, batch_size * num_tokens))
    chunks = [
        _saliency_excess(s_all.unsqueeze(0), s_easy[start:start + rows_per_chunk].unsqueeze(1), rho)
        .clamp_min_(0).sum(dim=-1)
        for start in range(0, num_easy, rows_per_chunk)
    ]
    if not chunks:
        return s_all.new_zeros((0, batch_size), dtype=torch.float32)
    return torch.cat(chunks)


def pair_gain(s_own: torch.Tensor, s_partner: torch.Tensor, rho: float) -> torch.Tensor:
    """Saliency gain of given pairs, row by row (the entries G[i, sigma(i)] of Eq. 6).

    Args:
        s_own: (B, T) saliency of the receiving samples.
        s_partner: (B, T) saliency of their partners.
        rho: minimum per-token saliency gain, >= 0.

    Returns:
        (B,) float32 gains.
    """
    _check_saliency_pair(s_own, s_partner)
    rho = _setting('rho', rho)
    return _saliency_excess(s_partner, s_own, rho).clamp_min(0).sum(dim=-1)


def _solve_assignment(gain: np.ndarray) -> np.ndarray:
    """Hungarian matching on a (B', B) float64 array, B' <= B: the column of each row, in row order."""
    if gain.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    rows, columns = linear_sum_assignment(gain, maximize=True)
    order = np.argsort(rows)  # scipy returns rows sorted already; keep the contract explicit
    return columns[order].astype(np.int64)


def assign_partners(gain: torch.Tensor) -> torch.Tensor:
    """Partners that maximise the total saliency gain, each column used once (paper Eq. 7).

    Solves the linear sum assignment on the host in float64 (one device-to-host copy).
    Self-matching is allowed: pairing a sample with itself replaces nothing.

    Args:
        gain: (B', B) gain matrix from `saliency_gain`, B' <= B, finite.

    Returns:
        (B',) long tensor on `gain.device`: the partner column of each row, all distinct.
    """
    _require_tensor('gain', gain)
    _require_shape('gain', gain, "(B', B) with B' <= B", gain.ndim == 2 and gain.shape[0] <= gain.shape[1])
    _require_float('gain', gain)
    host_gain = gain.detach().cpu().numpy().astype(np.float64)
    if not np.isfinite(host_gain).all():
        raise ValueError('gain must be finite, got NaN or infinite entries')
    return torch.from_numpy(_solve_assignment(host_gain)).to(gain.device)


def replacement_mask(
        s_own: torch.Tensor,
        s_partner: torch.Tensor,
        rho: float,
) -> torch.Tensor:
    """Tokens to replace (paper Eq. 9, as 1 - M): True where s_partner - s_own > rho, strictly.

    Args:
        s_own: (B, T) saliency the comparison is made against.
        s_partner: (B, T) saliency of each row's partner.
        rho: minimum per-token saliency gain, >= 0.

    Returns:
        (B, T) bool mask, True = replaced.
    """
    _check_saliency_pair(s_own, s_partner)
    rho = _setting('rho', rho)
    return _saliency_excess(s_partner, s_own, rho) > 0


def mix_targets(
        y: torch.Tensor,
        s_own: torch.Tensor,
        s_partner: torch.Tensor,
        mask: torch.Tensor,
        partner: torch.Tensor,
) -> torch.Tensor:
    """Saliency-weighted label mixing (paper Eq. 11).

    With a = sum of s_own over kept tokens and b = sum of s_partner over replaced tokens, row i
    becomes a / (a + b) * y[i] + b / (a + b) * y[partner[i]]; rows with a + b = 0 are unchanged.

    Args:
        y: (B, C) soft targets before mixing.
        s_own: (B, T) saliency of each row's own tokens.
        s_partner: (B, T) saliency of each row's partner tokens.
        mask: (B, T) bool, True = replaced.
        partner: (B,) long partner index of each row.

    Returns:
        (B, C) mixed targets in y's dtype.
    """
    _check_saliency_pair(s_own, s_partner)
    for name, value in (('y', y), ('mask', mask), ('partner', partner)):
        _require_tensor(name, value)
    batch_size = s_own.shape[0]
    _require_shape('y', y, f'(B, C) with B = {batch_size}', y.ndim == 2 and y.shape[0] == batch_size)
    _require_float('y', y)
    _require_shape('mask', mask, f'(B, T) = {tuple(s_own.shape)}', mask.shape == s_own.shape)
    if mask.dtype != torch.bool:
        raise ValueError(f'mask must be a bool tensor, got dtype {mask.dtype}')
    _require_shape('partner', partner, f'(B,) = ({batch_size},)', tuple(partner.shape) == (batch_size,))
    if partner.dtype != torch.long:
        raise ValueError(f'partner must be an int64 tensor, got dtype {partner.dtype}')
    work_dtype = torch.promote_types(y.dtype, torch.float32)  # half targets mix in float32, float64 stays
    kept = (s_own.to(work_dtype) * ~mask).sum(dim=-1)
    taken = (s_partner.to(work_dtype) * mask).sum(dim=-1)
    total = kept + taken
    has_weight = total > 0
    own_weight = torch.where(has_weight, kept / torch.where(has_weight, total, torch.ones_like(total)), 1.0)
    own_weight = own_weight.unsqueeze(-1)
    mixed = own_weight * y.to(work_dtype) + (1.0 - own_weight) * y[partner].to(work_dtype)
    return mixed.to(y.dtype)


def finite_samples(x: torch.Tensor, saliency: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,) bool: True for the samples whose tokens x (B, N, D), and saliency (B, T) if given, are all finite."""
    finite = torch.isfinite(x.detach()).flatten(1).all(dim=-1)
    if saliency is not None:
        finite = finite & torch.isfinite(saliency.detach()).all(dim=-1)
    return finite


def horizontal_mix(
        x: torch.Tensor,
        y: torch.Tensor,
        saliency: torch.Tensor,
        easy: torch.Tensor,
        rho: float,
        num_prefix_tokens: int = 0,
        mask_reference: str = SETTING_DEFAULTS['mask_reference'],
        pairing: str = SETTING_DEFAULTS['pairing'],
        token_selection: str = SETTING_DEFAULTS['token_selection'],
        label_mixing: str = SETTING_DEFAULTS['label_mixing'],
) -> HorizontalMix:
    """Horizontal TokenMixup of one batch (paper Alg. 1 lines 3-8, Eq. 6-11).

    Every easy sample i is paired with a partner sigma(i) from the whole batch by Hungarian matching
    on the gain matrix (Eq. 6-7). Token t of i is replaced by the partner's pre-mix token t when
    S[sigma(i), t] - S[i, t] > rho (Eq. 9-10), and the targets are reweighted by saliency (Eq. 11).
    Prefix tokens and samples that are not easy are left untouched, and the batch keeps its order.

    Args:
        x: (B, N, D) tokens entering the block.
        y: (B, C) soft targets (rows of non-negative values summing to 1).
        saliency: (B, T) saliency of the non-prefix tokens, T = N - P.
        easy: (B,) bool, the samples that may be mixed.
        rho: minimum per-token saliency gain, >= 0.
        num_prefix_tokens: P, leading tokens that are never mixed.
        mask_reference: 'own' compares each easy sample's own saliency with its partner's (Eq. 9 as
            written); 'first' compares against the first easy sample's saliency for every easy
            sample, reproducing the released TokenMixup code. The label weights use each sample's
            own saliency either way.
        pairing: 'hungarian' (Eq. 7), or 'random': distinct partners drawn at random from the whole
            batch, ignoring the gain (paper Table 4, "optimal assignment" ablated).
        token_selection: 'saliency' (Eq. 9), or 'random': each easy sample replaces as many tokens as
            the saliency mask would for its pair, at random non-prefix positions (Table 4, "token-level
            mixup" ablated).
        label_mixing: 'saliency' (Eq. 11), or 'count': the own label keeps the fraction of tokens kept
            (Table 4, "saliency-based label reassignment" ablated).

    Returns:
        `HorizontalMix(x, y, mask, partner)`.

    A sample whose tokens or saliency hold NaN or infinite values (e.g. after a float16 overflow) is
    left unmixed and is never chosen as a partner, so one such sample cannot spread into others; the
    step goes on (a loss scaler or the training loop decides what to do with a non-finite loss). The
    gain matrix, the `easy` flags, the per-sample finiteness and the validity check of `y` travel to
    the host in a single copy; the partners are chosen there and come back to the device. Random
    choices draw from torch's default generators (partners on the CPU, token positions on x's device).
    """
    for name, value in (('x', x), ('y', y), ('saliency', saliency), ('easy', easy)):
        _require_tensor(name, value)
    _require_shape('x', x, '(B, N, D)', x.ndim == 3)
    _require_float('x', x)
    batch_size, num_tokens, _ = x.shape
    prefix = _check_prefix(num_prefix_tokens, num_tokens)
    num_mixable = num_tokens - prefix
    _require_shape('y', y, f'(B, C) with B = {batch_size}', y.ndim == 2 and y.shape[0] == batch_size)
    _require_float('y', y)
    _require_shape('saliency', saliency, f'(B, T) = ({batch_size}, {num_mixable})',
                   tuple(saliency.shape) == (batch_size, num_mixable))
    _require_float('saliency', saliency)
    _require_shape('easy', easy, f'(B,) = ({batch_size},)', tuple(easy.shape) == (batch_size,))
    if easy.dtype != torch.bool:
        raise ValueError(f'easy must be a bool tensor, got dtype {easy.dtype}')
    _require_same_device('x', x, y=y, saliency=saliency, easy=easy)
    options = check_settings(dict(rho=rho, mask_reference=mask_reference, pairing=pairing,
                                  token_selection=token_selection, label_mixing=label_mixing))
    rho = options['rho']

    saliency = saliency.detach()
    y_values = y.detach().float()
    tolerance = _target_tolerance(y.dtype)
    invalid_target = (
        ~torch.isfinite(y_values).all()
        | (y_values < -tolerance).any()
        | ((y_values.sum(dim=-1) - 1.0).abs() > tolerance).any())
    finite = finite_samples(x, saliency)

    hungarian = pairing == 'hungarian'
    gain = saliency_gain(saliency, saliency, rho) if hungarian else saliency.new_zeros((0,))
    packed = torch.cat([gain.flatten(), easy.float(), finite.float(), invalid_target.float().view(1)])
    host = packed.cpu().numpy().astype(np.float64)  # the one device-to-host copy
    host_easy = host[gain.numel():gain.numel() + batch_size] > 0.5
    host_finite = host[gain.numel() + batch_size:-1] > 0.5
    if host[-1] > 0:
        raise ValueError(
            f'y must hold soft targets: finite, non-negative rows summing to 1 (tolerance {tolerance:g})')

    partner = np.arange(batch_size, dtype=np.int64)
    candidates = np.flatnonzero(host_finite)  # a sample with a non-finite token or saliency is no partner
    easy_rows = np.flatnonzero(host_easy & host_finite)  # ... and is left unmixed
    if easy_rows.size == 0:  # nothing to mix: hand the batch back without touching it
        no_mask = torch.zeros(saliency.shape, dtype=torch.bool, device=x.device)
        return HorizontalMix(x, y, no_mask, torch.from_numpy(partner).to(x.device))
    reference = partner.copy()
    if hungarian:
        host_gain = host[:gain.numel()].reshape(batch_size, batch_size)
        partner[easy_rows] = candidates[_solve_assignment(host_gain[np.ix_(easy_rows, candidates)])]
    else:
        partner[easy_rows] = candidates[torch.randperm(candidates.size)[:easy_rows.size].numpy()]
    if mask_reference == 'first':
        reference[easy_rows] = easy_rows[0]
    indices = torch.from_numpy(np.stack([partner, reference])).to(x.device)
    partner_index, reference_index = indices[0], indices[1]

    s_partner = saliency[partner_index]
    # rows that are not easy are their own partner and reference, so their mask is all False
    mask = replacement_mask(saliency[reference_index], s_partner, rho)
    if token_selection == 'random':
        mask = _random_mask_like(mask)
    x_mixed = _take_tokens(x, F.pad(mask, (prefix, 0), value=False), partner_index)
    if label_mixing == 'count':
        uniform = torch.ones_like(saliency)
        y_mixed = mix_targets(y, uniform, uniform, mask, partner_index)
    else:
        y_mixed = mix_targets(y, saliency, s_partner, mask, partner_index)
    return HorizontalMix(x_mixed, y_mixed, mask, partner_index)


def _random_mask_like(mask: torch.Tensor) -> torch.Tensor:
    """A (B, T) mask with as many True entries per row as `mask`, at uniformly random positions."""
    counts = mask.sum(dim=-1, keepdim=True)
    rank = torch.rand(mask.shape, device=mask.device).argsort(dim=-1).argsort(dim=-1)
    return rank < counts


def manifold_mix(
        x: torch.Tensor,
        y: torch.Tensor,
        alpha: float,
        num_prefix_tokens: int = 0,
) -> HorizontalMix:
    """Manifold mixup of whole token sets (Verma et al. 2019; the comparison of paper Table 5).

    Every sample b becomes lam * x[b] + (1 - lam) * x[perm[b]] over all N tokens (the whole hidden
    state, prefix tokens included, unlike TokenMixup), with one lam ~ Beta(alpha, alpha) for the batch
    and a random permutation perm; the targets mix with the same weight. No gating, no saliency. A
    sample with non-finite tokens is neither mixed nor mixed into another (its pair keeps its own).

    Args:
        x: (B, N, D) tokens; y: (B, C) soft targets; alpha: Beta concentration, > 0.
        num_prefix_tokens: P, only for the shape of the returned mask.

    Returns:
        `HorizontalMix(x, y, mask, partner)` with mask (B, T) True on every token of the mixed samples
        (all tokens are interpolated) and partner = perm (own index where a sample is not mixed). lam is
        drawn on the CPU, perm on x's device: no device-to-host copy.
    """
    _require_tensor('x', x)
    _require_tensor('y', y)
    _require_shape('x', x, '(B, N, D)', x.ndim == 3)
    _require_float('x', x)
    batch_size, num_tokens, _ = x.shape
    _require_shape('y', y, f'(B, C) with B = {batch_size}', y.ndim == 2 and y.shape[0] == batch_size)
    _require_float('y', y)
    _require_same_device('x', x, y=y)
    prefix = _check_prefix(num_prefix_tokens, num_tokens)
    alpha = _setting('manifold_alpha', alpha)
    concentration = torch.tensor(alpha, dtype=torch.float64)
    lam = float(torch.distributions.Beta(concentration, concentration).sample())
    perm = torch.randperm(batch_size, device=x.device)
    rows = torch.arange(batch_size, device=x.device)
    finite = finite_samples(x)
    perm = torch.where(finite & finite[perm], perm, rows)  # a non-finite sample is no partner and stays as it is
    mixed_rows = perm != rows  # a sample paired with itself is left exactly as it was
    x_mixed = torch.where(mixed_rows.view(-1, 1, 1), lam * x + (1.0 - lam) * x[perm], x)
    work_dtype = torch.promote_types(y.dtype, torch.float32)
    y_mixed = (lam * y.to(work_dtype) + (1.0 - lam) * y[perm].to(work_dtype)).to(y.dtype)
    y_mixed = torch.where(mixed_rows.view(-1, 1), y_mixed, y)
    mask = mixed_rows.view(-1, 1).expand(batch_size, num_tokens - prefix)
    return HorizontalMix(x_mixed, y_mixed, mask, perm)


def _take_tokens(x: torch.Tensor, replace: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Eq. 10 as one gather: token (b, n) comes from row partner[b] where replace[b, n], else from row b.

    x: (B, N, D); replace: (B, N) bool; partner: (B,) long. Gradients flow to whichever row was read.
    """
    batch_size, num_tokens, dim = x.shape
    rows = torch.arange(batch_size, device=x.device)
    source_row = torch.where(replace, partner.unsqueeze(1), rows.unsqueeze(1))
    source = source_row * num_tokens + torch.arange(num_tokens, device=x.device)
    return x.reshape(batch_size * num_tokens, dim).index_select(0, source.flatten()).view(batch_size, num_tokens, dim)


def select_salient_tokens(
        x: torch.Tensor,
        saliency: torch.Tensor,
        kappa: int,
        num_prefix_tokens: int = 0,
) -> torch.Tensor:
    """The kappa most salient non-prefix tokens of each sample (VTM memory, paper Sec. 3.4).

    Args:
        x: (B, N, D) tokens.
        saliency: (B, T) saliency of the non-prefix tokens, T = N - P.
        kappa: how many tokens to keep, 1 <= kappa <= T.
        num_prefix_tokens: P, leading tokens that are never selected.

    Returns:
        (B, kappa, D) tokens gathered from x (gradient flows into x), most salient first.
    """
    _require_tensor('x', x)
    _require_tensor('saliency', saliency)
    _require_shape('x', x, '(B, N, D)', x.ndim == 3)
    batch_size, num_tokens, dim = x.shape
    prefix = _check_prefix(num_prefix_tokens, num_tokens)
    num_mixable = num_tokens - prefix
    _require_shape('saliency', saliency, f'(B, T) = ({batch_size}, {num_mixable})',
                   tuple(saliency.shape) == (batch_size, num_mixable))
    _require_float('saliency', saliency)
    _require_same_device('x', x, saliency=saliency)
    if isinstance(kappa, bool) or not isinstance(kappa, int) or not 1 <= kappa <= num_mixable:
        raise ValueError(f'kappa must be an int in [1, T] = [1, {num_mixable}], got {kappa!r}')
    top = saliency.detach().topk(kappa, dim=1, largest=True, sorted=True).indices + prefix
    return x.gather(1, top.unsqueeze(-1).expand(-1, -1, dim))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against soft targets (the ScoreNet difficulty, paper Eq. 1).

    Args:
        logits: (B, C) unnormalised scores.
        target: (B, C) soft targets.

    Returns:
        (B,) float32 losses, differentiable with respect to `logits`.
    """
    _check_matching_pair('logits', logits, 'target', target, '(B, C)')
    return -(target.float() * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
