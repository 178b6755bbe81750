"""Saliency baselines for analysis (docs/design.md §2.1 'optional for analysis', paper Eq. 2 and Sec. 5.1)."""
import pytest
import torch
import torch.nn as nn

from tokenmixup import attention_rollout, attention_saliency, gradient_saliency, random_saliency


def _attention(batch_size: int, heads: int, tokens: int) -> torch.Tensor:
    return torch.randn(batch_size, heads, tokens, tokens).softmax(dim=-1)


def _focus(tokens: int, key: int) -> torch.Tensor:
    """(1, 1, N, N) map in which every query attends only to `key`."""
    attn = torch.zeros(1, 1, tokens, tokens)
    attn[..., key] = 1.0
    return attn


# ---------------------------------------------------------------------------------------------
# attention_rollout (Eq. 2)

@pytest.mark.parametrize('prefix, reduce', [(0, 'mean'), (1, 'mean'), (1, 'cls')])
def test_rollout_of_one_map_is_attention_saliency(prefix, reduce):
    """Eq. 2 with l = 0 is the 1-step saliency TokenMixup uses."""
    attn = _attention(2, 3, 5)
    torch.testing.assert_close(attention_rollout([attn], prefix, reduce), attention_saliency(attn, prefix, reduce))


def test_rollout_averages_heads_before_multiplying():
    """Eq. 2: Phi = (1/H) sum_h Phi_h, then the product of the Phis (not the mean of per-head products).

    Both blocks have heads (swap, identity) on N = 2 tokens, so Phi = [[.5, .5], [.5, .5]] and the product
    is the same matrix: the CLS row gives 0.5 to token 1. Multiplying head by head would give the identity
    (swap @ swap, identity @ identity), whose CLS row gives 0 to token 1.
    """
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    block = torch.stack([swap, torch.eye(2)]).unsqueeze(0)  # (1, 2, 2, 2)
    torch.testing.assert_close(attention_rollout([block, block], 1, 'cls'), torch.tensor([[0.5]]))


def test_rollout_of_two_maps_is_saliency_of_the_product_of_head_means():
    """Eq. 2-3 for two blocks, by hand. Both blocks have heads (I, C) on N = 3 tokens with C the cyclic
    shift (query i reads key i + 1), so Phi = (I + C) / 2 and A = Phi Phi = (I + 2C + C^2) / 4 (the two
    Phis are equal, so the order of the product does not matter here). CLS row of A: (1/4, 1/2, 1/4);
    with P = 1 the saliency is (1/2, 1/4). One map alone would give (1/2, 0); per-head products (0, 1/2)."""
    shift = torch.roll(torch.eye(3), shifts=1, dims=1)
    assert shift[0, 1] == 1 and shift[2, 0] == 1
    block = torch.stack([torch.eye(3), shift]).unsqueeze(0)  # (1, 2, 3, 3)
    rollout = attention_rollout([block, block], 1, 'cls')
    torch.testing.assert_close(rollout, torch.tensor([[0.5, 0.25]]))
    phi = block.mean(dim=1, keepdim=True)
    torch.testing.assert_close(rollout, attention_saliency(phi @ phi, 1, 'cls'))


def test_rollout_traces_attention_back_to_the_first_blocks_input_tokens():
    """Attention rollout (Abnar & Zuidema, the paper's ref. [30]) gives the saliency of the tokens entering
    the first block l (docs/design.md §2.1, the tokens HTM would mix): A = Phi(l + 1) Phi(l) when rows are queries.

    Block l: every query reads token 1 of block l's input. Block l + 1: every query reads token 0 of its
    input, which is block l's output token 0, which read block l's input token 1. All attention therefore
    flows to input token 1 of block l: saliency (0, 1, 0). Multiplying the other way round, Phi(l) Phi(l + 1),
    traces to block l + 1's input token 0 instead, which is not a token of block l.
    """
    block_l, block_l1 = _focus(3, key=1), _focus(3, key=0)
    torch.testing.assert_close(attention_rollout([block_l, block_l1], 0, 'mean'), torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(attention_rollout([block_l, block_l1], 1, 'cls'), torch.tensor([[1.0, 0.0]]))


def test_rollout_output_is_float32_without_gradient():
    attn = _attention(2, 3, 5).requires_grad_(True)
    out = attention_rollout([attn, _attention(2, 3, 5)])
    assert out.shape == (2, 5) and out.dtype == torch.float32 and not out.requires_grad


def test_rollout_of_no_maps_raises_value_error():
    with pytest.raises(ValueError, match='attns'):
        attention_rollout([])


def test_rollout_of_maps_with_different_token_counts_raises_value_error():
    with pytest.raises(ValueError, match=r'attns\[1\]'):
        attention_rollout([_attention(2, 3, 5), _attention(2, 3, 4)])


def test_rollout_of_a_non_square_map_raises_value_error():
    with pytest.raises(ValueError, match=r'attns\[0\]'):
        attention_rollout([torch.rand(2, 3, 1, 5)])


# ---------------------------------------------------------------------------------------------
# gradient_saliency (PuzzleMix / Co-Mixup baseline, Table 3)

class _Linear(nn.Module):
    """logits = W vec(image) + b for (B, 2, 4, 4) images and 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.flatten(1))


def _hand_gradient_saliency(model: _Linear, images, target, grid):
    """For a linear model d CE_i / d x_i = W^T (softmax(z_i) - y_i): closed form, no autograd."""
    with torch.no_grad():
        probs = model(images).softmax(dim=-1)
        grad = ((probs - target) @ model.fc.weight).view_as(images)
        pixel = grad.pow(2).mean(dim=1).sqrt()                         # (B, H, W)
        rows, cols = grid
        height, width = pixel.shape[-2:]
        pooled = pixel.view(-1, rows, height // rows, cols, width // cols).mean(dim=(2, 4))
    return pooled.flatten(1)


def test_gradient_saliency_of_a_linear_model_is_the_closed_form():
    """sqrt of the channel mean of the squared input gradient of each sample's soft CE, average pooled."""
    model = _Linear()
    images, target = torch.randn(3, 2, 4, 4), torch.randn(3, 3).softmax(dim=-1)
    saliency = gradient_saliency(model, images, target, (2, 2))
    assert saliency.shape == (3, 4) and saliency.dtype == torch.float32
    torch.testing.assert_close(saliency, _hand_gradient_saliency(model, images, target, (2, 2)))


def test_gradient_saliency_is_non_negative_with_one_value_per_token_of_a_conv_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5))
    saliency = gradient_saliency(model, torch.randn(2, 3, 8, 8), torch.randn(2, 5).softmax(-1), (4, 2))
    assert saliency.shape == (2, 4 * 2)
    assert (saliency >= 0).all() and (saliency > 0).any()


def test_gradient_saliency_of_a_sample_depends_only_on_its_own_loss():
    model = _Linear()
    images = torch.randn(2, 2, 4, 4)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    changed = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # only sample 1's target changes
    before = gradient_saliency(model, images, target, (2, 2))
    after = gradient_saliency(model, images, changed, (2, 2))
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])


def test_gradient_saliency_leaves_parameter_gradients_untouched():
    model = _Linear()
    images = torch.randn(2, 2, 4, 4, requires_grad=True)
    gradient_saliency(model, images, torch.randn(2, 3).softmax(-1), (2, 2))
    assert all(parameter.grad is None for parameter in model.parameters())
    assert images.grad is None


def test_gradient_saliency_works_under_no_grad():
    """It is called from analysis loops that may run without gradient."""
    model = _Linear()
    with torch.no_grad():
        saliency = gradient_saliency(model, torch.randn(2, 2, 4, 4), torch.randn(2, 3).softmax(-1), (2, 2))
    assert (saliency > 0).all()


def test_gradient_saliency_rejects_images_without_channels():
    with pytest.raises(ValueError, match='images'):
        gradient_saliency(_Linear(), torch.randn(2, 4, 4), torch.randn(2, 3).softmax(-1), (2, 2))


# ---------------------------------------------------------------------------------------------
# random_saliency (the random-token baseline)

def test_random_saliency_rows_are_non_negative_and_sum_to_one():
    saliency = random_saliency(4, 9)
    assert saliency.shape == (4, 9) and saliency.dtype == torch.float32
    assert (saliency >= 0).all()
    torch.testing.assert_close(saliency.sum(dim=-1), torch.ones(4))


def test_random_saliency_is_reproducible_with_a_generator():
    first = random_saliency(4, 9, generator=torch.Generator().manual_seed(7))
    second = random_saliency(4, 9, generator=torch.Generator().manual_seed(7))
    other = random_saliency(4, 9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_random_saliency_rejects_no_tokens():
    with pytest.raises(ValueError):
        random_saliency(4, 0)
