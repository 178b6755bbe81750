"""Vertical TokenMixup attention (docs/design.md §2.3, paper Eq. 13) and its helpers."""
import pytest
import torch
import torch.nn as nn
from timm.layers import Attention

from tokenmixup import attention_weights, self_attention_weights, split_qkv, vertical_attention

B, N, M, D, H = 2, 5, 3, 8, 2


def _timm_attention(**kwargs) -> Attention:
    return Attention(D, num_heads=H, qkv_bias=True, **kwargs).eval()


def _call(attn: Attention, x, memory, norm, **kwargs):
    q, k, v = split_qkv(attn.qkv.weight, attn.qkv.bias)
    return vertical_attention(x, memory, H, q, k, v, norm=norm, **kwargs)


def _eq13(x, memory, norm, attn: Attention):
    """Eq. 13 written out: Z = softmax(norm(X1) Wq (norm(X2) Wk)^T * scale) norm(X2) Wv, X2 = concat(X1, memory)."""
    x2 = norm(torch.cat([x, memory], dim=1))
    wq, wk, wv = attn.qkv.weight.chunk(3, dim=0)
    bq, bk, bv = attn.qkv.bias.chunk(3, dim=0)
    q = x2[:, :x.shape[1]] @ wq.T + bq
    k = x2 @ wk.T + bk
    v = x2 @ wv.T + bv
    head_dim = D // H
    outputs = []
    for h in range(H):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        probs = (q[..., cols] @ k[..., cols].transpose(1, 2) * head_dim ** -0.5).softmax(dim=-1)
        outputs.append(probs @ v[..., cols])
    return torch.cat(outputs, dim=-1)


# ---------------------------------------------------------------------------------------------
# without memory: plain self-attention, the same as timm's (docs/design.md §2.3: eval is bit-identical to the base)

@pytest.mark.parametrize('empty_memory', [False, True])
def test_without_memory_it_is_timms_attention_before_the_projection(empty_memory):
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    x = torch.randn(B, N, D)
    memory = torch.zeros(B, 0, D) if empty_memory else None
    out = _call(attn, x, memory, norm)
    assert out.x.shape == (B, N, D) and out.attn is None
    with torch.no_grad():
        torch.testing.assert_close(attn.proj(out.x), attn(norm(x)))


def test_without_memory_it_matches_timms_attention_with_qk_norm():
    attn, norm = _timm_attention(qk_norm=True, norm_layer=nn.LayerNorm), nn.LayerNorm(D)
    with torch.no_grad():  # non-trivial q/k norms
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(B, N, D)
    out = _call(attn, x, None, norm, q_norm=attn.q_norm, k_norm=attn.k_norm)
    with torch.no_grad():
        torch.testing.assert_close(attn.proj(out.x), attn(norm(x)))


# ---------------------------------------------------------------------------------------------
# with memory: Eq. 13

def test_with_memory_it_is_eq13_queries_from_x_keys_and_values_from_concat():
    attn, norm = _timm_attention().double(), nn.LayerNorm(D).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x, memory = torch.randn(B, N, D, dtype=torch.float64), torch.randn(B, M, D, dtype=torch.float64)
    out = _call(attn, x, memory, norm)
    with torch.no_grad():
        torch.testing.assert_close(out.x, _eq13(x, memory, norm, attn))


def test_with_memory_the_output_keeps_n_tokens():
    out = _call(_timm_attention(), torch.randn(B, N, D), torch.randn(B, 7, D), nn.LayerNorm(D))
    assert out.x.shape == (B, N, D)


def test_memory_changes_the_output():
    """Guards the Eq. 13 test: the memory tokens are attended to, so adding them changes the result."""
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    x = torch.randn(B, N, D)
    with torch.no_grad():
        assert not torch.allclose(_call(attn, x, None, norm).x, _call(attn, x, torch.randn(B, M, D), norm).x)


def test_gradient_flows_into_memory():
    """docs/design.md §2.3: gradient flows into m (unless the caller detaches it)."""
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    memory = torch.randn(B, M, D, requires_grad=True)
    out = _call(attn, torch.randn(B, N, D), memory, norm)
    (grad,) = torch.autograd.grad((out.x * torch.randn_like(out.x)).sum(), memory)
    assert grad.shape == (B, M, D)
    assert (grad.abs().sum(dim=(1, 2)) > 0).all()


# ---------------------------------------------------------------------------------------------
# explicit attention rows

def test_attention_rows_all_returns_probabilities_over_tokens_and_memory():
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    out = _call(attn, torch.randn(B, N, D), torch.randn(B, M, D), norm, attention_rows='all')
    assert out.attn.shape == (B, H, N, N + M)
    assert (out.attn >= 0).all()
    torch.testing.assert_close(out.attn.sum(dim=-1), torch.ones(B, H, N))


def test_attention_rows_all_gives_the_same_output_as_the_fused_kernel():
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    x, memory = torch.randn(B, N, D), torch.randn(B, M, D)
    fused = _call(attn, x, memory, norm)
    explicit = _call(attn, x, memory, norm, attention_rows='all')
    torch.testing.assert_close(explicit.x, fused.x)


def test_attention_rows_all_are_the_eq13_probabilities():
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    x, memory = torch.randn(B, N, D), torch.randn(B, M, D)
    probs = _call(attn, x, memory, norm, attention_rows='all').attn
    x2 = norm(torch.cat([x, memory], dim=1))
    wq, wk, _ = attn.qkv.weight.chunk(3, dim=0)
    bq, bk, _ = attn.qkv.bias.chunk(3, dim=0)
    q = (x2[:, :N] @ wq.T + bq).view(B, N, H, D // H).transpose(1, 2)
    k = (x2 @ wk.T + bk).view(B, N + M, H, D // H).transpose(1, 2)
    torch.testing.assert_close(probs, (q @ k.transpose(-2, -1) * (D // H) ** -0.5).softmax(dim=-1))


def test_attention_rows_cls_returns_row_zero_of_the_full_probabilities():
    """docs/design.md §2.1: the 'cls' saliency needs only the CLS query, (B, H, 1, N + M)."""
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    x, memory = torch.randn(B, N, D), torch.randn(B, M, D)
    full = _call(attn, x, memory, norm, attention_rows='all').attn
    cls = _call(attn, x, memory, norm, attention_rows='cls')
    assert cls.attn.shape == (B, H, 1, N + M)
    torch.testing.assert_close(cls.attn, full[:, :, :1])
    torch.testing.assert_close(cls.x, _call(attn, x, memory, norm).x)


def test_attention_rows_none_returns_no_probabilities():
    assert _call(_timm_attention(), torch.randn(B, N, D), None, nn.LayerNorm(D)).attn is None


# ---------------------------------------------------------------------------------------------
# split_qkv

def test_split_qkv_splits_a_fused_weight_into_three_equal_row_blocks():
    weight = torch.arange(6 * 4, dtype=torch.float32).view(6, 4)
    bias = torch.arange(6, dtype=torch.float32)
    (wq, bq), (wk, bk), (wv, bv) = split_qkv(weight, bias)
    assert wq.shape == wk.shape == wv.shape == (2, 4)
    assert bq.shape == bk.shape == bv.shape == (2,)
    assert torch.equal(wq, weight[0:2]) and torch.equal(wk, weight[2:4]) and torch.equal(wv, weight[4:6])
    assert torch.equal(bq, bias[0:2]) and torch.equal(bk, bias[2:4]) and torch.equal(bv, bias[4:6])


def test_split_qkv_without_bias_gives_none_biases():
    (_, bq), (_, bk), (_, bv) = split_qkv(torch.randn(6, 4))
    assert bq is None and bk is None and bv is None


def test_split_qkv_rejects_a_weight_not_divisible_into_three():
    with pytest.raises(ValueError, match=r'\(7, 4\)'):
        split_qkv(torch.randn(7, 4))


def test_split_qkv_rejects_a_bias_of_the_wrong_length():
    with pytest.raises(ValueError, match='bias'):
        split_qkv(torch.randn(6, 4), torch.randn(5))


# ---------------------------------------------------------------------------------------------
# attention_weights

def test_attention_weights_cls_only_is_row_zero_of_the_full_matrix():
    q, k = torch.randn(B, H, N, 4), torch.randn(B, H, N + M, 4)
    full = attention_weights(q, k, scale=0.5)
    cls = attention_weights(q, k, scale=0.5, cls_only=True)
    assert full.shape == (B, H, N, N + M) and cls.shape == (B, H, 1, N + M)
    torch.testing.assert_close(cls, full[:, :, :1])


def test_attention_weights_are_softmax_of_scaled_logits():
    q = torch.tensor([[[[1.0, 0.0]]]])                  # B = H = 1, one query
    k = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])      # logits 2 * scale and 0
    probs = attention_weights(q, k, scale=0.5)          # softmax(1, 0)
    e = torch.tensor(1.0).exp()
    torch.testing.assert_close(probs, torch.tensor([[[[e / (e + 1), 1 / (e + 1)]]]]))


# ---------------------------------------------------------------------------------------------
# self_attention_weights (the HTM saliency pass: probabilities only)

def test_self_attention_weights_are_the_probabilities_of_plain_self_attention():
    attn, norm = _timm_attention(qk_norm=True, norm_layer=nn.LayerNorm), nn.LayerNorm(D)
    x = torch.randn(B, N, D)
    q_proj, k_proj, _ = split_qkv(attn.qkv.weight, attn.qkv.bias)
    probs = self_attention_weights(x, H, q_proj, k_proj, norm=norm, q_norm=attn.q_norm, k_norm=attn.k_norm)
    full = _call(attn, x, None, norm, q_norm=attn.q_norm, k_norm=attn.k_norm, attention_rows='all').attn
    assert probs.shape == (B, H, N, N) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, full)


def test_self_attention_weights_cls_only_is_row_zero():
    """docs/design.md §2.1: the 'cls' saliency costs O(N) per head: only the first token's query is used."""
    attn, norm = _timm_attention(), nn.LayerNorm(D)
    x = torch.randn(B, N, D)
    q_proj, k_proj, _ = split_qkv(attn.qkv.weight, attn.qkv.bias)
    full = self_attention_weights(x, H, q_proj, k_proj, norm=norm)
    cls = self_attention_weights(x, H, q_proj, k_proj, norm=norm, cls_only=True)
    assert cls.shape == (B, H, 1, N)
    torch.testing.assert_close(cls, full[:, :, :1])


# ---------------------------------------------------------------------------------------------
# argument checks

@pytest.mark.parametrize('memory_shape', [(B + 1, M, D), (B, M, D + 1), (B, M)])
def test_memory_of_the_wrong_shape_raises_value_error(memory_shape):
    with pytest.raises(ValueError, match='memory'):
        _call(_timm_attention(), torch.randn(B, N, D), torch.randn(*memory_shape), nn.LayerNorm(D))


def test_unknown_attention_rows_raises_value_error():
    with pytest.raises(ValueError, match='attention_rows'):
        _call(_timm_attention(), torch.randn(B, N, D), None, nn.LayerNorm(D), attention_rows='first')


def test_x_without_a_token_axis_raises_value_error():
    with pytest.raises(ValueError, match='x'):
        _call(_timm_attention(), torch.randn(B, D), None, nn.LayerNorm(D))
