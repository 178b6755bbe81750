"""The fast paths equal the slow ones (docs/design.md §4, §9; benchmarks/README.md).

- Blocks that feed the VTM memory run the fused attention kernel and read their saliency from
  probabilities recomputed without gradient; the explicit softmax attention with gradient they used
  before is kept here as the oracle (outputs and gradients within fp32 tolerance, atol 1e-5).
- Gradient checkpointing covers every block, VTM blocks and the blocks that feed the memory included,
  with the same gradients as without it.
"""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers the zoo)
import models.tokenmixup_layers as layers
from tokenmixup import attention_weights, split_qkv, vertical_attention

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _explicit_attention(x, memory, num_heads, qkv, norm, scale):
    """The previous implementation: softmax(q k^T) @ v with gradient through the probabilities."""
    (wq, bq), (wk, bk), (wv, bv) = split_qkv(qkv.weight, qkv.bias)
    context = norm(torch.cat([x, memory], dim=1) if memory is not None else x)

    def heads(tokens, weight, bias):
        out = F.linear(tokens, weight, bias)
        return out.view(out.shape[0], out.shape[1], num_heads, -1).transpose(1, 2)

    q, k, v = heads(context[:, :x.shape[1]], wq, bq), heads(context, wk, bk), heads(context, wv, bv)
    attn = attention_weights(q, k, scale)
    out = attn.to(v.dtype) @ v
    return out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1), attn


@pytest.mark.parametrize('with_memory', [False, True])
def test_fused_attention_with_saliency_rows_equals_the_explicit_oracle(with_memory):
    torch.manual_seed(0)
    dim, heads = 32, 4
    qkv, norm = torch.nn.Linear(dim, 3 * dim), torch.nn.LayerNorm(dim)
    x = torch.randn(3, 10, dim, requires_grad=True)
    memory = torch.randn(3, 6, dim, requires_grad=True) if with_memory else None
    scale = (dim // heads) ** -0.5
    q_proj, k_proj, v_proj = split_qkv(qkv.weight, qkv.bias)
    fast = vertical_attention(x, memory, heads, q_proj, k_proj, v_proj, norm=norm, scale=scale, attention_rows='all')
    slow_out, slow_attn = _explicit_attention(x, memory, heads, qkv, norm, scale)
    torch.testing.assert_close(fast.x, slow_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.attn, slow_attn.detach(), rtol=0, atol=1e-6)
    assert not fast.attn.requires_grad  # saliency only: nothing of it is kept for backward
    inputs = [x, qkv.weight, qkv.bias, norm.weight] + ([memory] if with_memory else [])
    probe = torch.randn_like(slow_out)
    fast_grads = torch.autograd.grad((fast.x * probe).sum(), inputs)
    slow_grads = torch.autograd.grad((slow_out * probe).sum(), inputs)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        torch.testing.assert_close(fast_grad, slow_grad, rtol=0, atol=1e-5)


def _saved_attention_maps(model, images, labels, tokens, memory_tokens):
    """Shapes of the (B, H, N, N) and (B, H, N, N + M) tensors autograd keeps during one training forward."""
    shapes = []

    def pack(tensor):
        if tensor.ndim == 4 and tensor.shape[-2] == tokens and tensor.shape[-1] in (tokens, tokens + memory_tokens):
            shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images, labels)
    return shapes


def test_memory_feeding_blocks_keep_no_attention_maps_for_backward():
    """The explicit probabilities with gradient were kept for backward by every block feeding the memory;
    now such a block keeps what the base block's fused kernel keeps. (16x16 images: 16 tokens, head width
    64, kappa 4 from each of 3 blocks; no attention dropout, so that the CPU runs the fused kernel.)"""
    images, labels = torch.randn(2, 3, 16, 16), torch.arange(2)
    settings = dict(num_classes=10, img_size=16, attn_drop_rate=0.0)
    base = timm.create_model('cct_4_3x2', **settings).train()
    vtm = timm.create_model('cct_4_3x2', vtm_layers=(3,), kappa=4, **settings).train()
    vtm.load_state_dict(base.state_dict())
    base_maps = _saved_attention_maps(base, images, labels, 16, 12)
    vtm_maps = _saved_attention_maps(vtm, images, labels, 16, 12)
    assert len(vtm_maps) == len(base_maps)
    # positive control: with attention dropout on the CPU the blocks feeding the memory compute their
    # probabilities explicitly (docs/design.md §4), and the same capture sees those maps
    explicit = timm.create_model('cct_4_3x2', vtm_layers=(3,), kappa=4, **dict(settings, attn_drop_rate=0.1)).train()
    explicit.load_state_dict(base.state_dict())
    assert len(_saved_attention_maps(explicit, images, labels, 16, 12)) > len(vtm_maps)


@pytest.mark.parametrize('name', ['cct_2_3x2_htm_vtm', 'cct_7_3x1_htm_vtm', 'vit_tiny_patch16_224_htm_vtm'])
def test_grad_checkpointing_covers_every_block_with_the_same_gradients(name, monkeypatch):
    torch.manual_seed(0)
    extra = dict(img_size=32, patch_size=8) if name.startswith('vit') else {}
    model = timm.create_model(name, num_classes=10, tau=1e9, rho=0.0, **extra).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    calls = []
    real_checkpoint = layers.checkpoint
    monkeypatch.setattr(layers, 'checkpoint', lambda function, *args: calls.append(function) or real_checkpoint(
        function, *args))
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    grads = []
    for candidate in (model, checkpointed):
        torch.manual_seed(1)  # the same dropout draws; checkpointing replays them in the recomputation
        out = candidate(images, labels)
        (F.cross_entropy(out.logits, out.target) + out.aux_loss).backward()
        grads.append({key: p.grad for key, p in candidate.named_parameters() if p.grad is not None})
    assert len(calls) == len(model.blocks)  # every block, the memory's included
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=0, atol=1e-6, msg=key)


def test_with_attention_dropout_on_the_cpu_the_probabilities_are_computed_once():
    """The CPU kernels cannot fuse dropout: there the output comes from the explicit probabilities (the same
    draws as the oracle's), which are also the returned, detached saliency input."""
    torch.manual_seed(0)
    dim, heads = 32, 4
    qkv, norm = torch.nn.Linear(dim, 3 * dim), torch.nn.LayerNorm(dim)
    x, memory = torch.randn(3, 10, dim), torch.randn(3, 6, dim)
    scale = (dim // heads) ** -0.5
    q_proj, k_proj, v_proj = split_qkv(qkv.weight, qkv.bias)
    torch.manual_seed(5)
    fast = vertical_attention(x, memory, heads, q_proj, k_proj, v_proj, norm=norm, scale=scale, dropout_p=0.5,
                              attention_rows='all')
    _, probabilities = _explicit_attention(x, memory, heads, qkv, norm, scale)
    (_, _), (_, _), (wv, bv) = split_qkv(qkv.weight, qkv.bias)
    values = F.linear(norm(torch.cat([x, memory], dim=1)), wv, bv).view(3, 16, heads, -1).transpose(1, 2)
    torch.manual_seed(5)
    expected = (F.dropout(probabilities, p=0.5) @ values).transpose(1, 2).reshape(3, 10, -1)
    torch.testing.assert_close(fast.x, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.attn, probabilities.detach(), rtol=0, atol=1e-6)
    assert not fast.attn.requires_grad and fast.x.requires_grad
