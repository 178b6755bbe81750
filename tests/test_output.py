"""TokenMixupOutput: what `model(x, target)` returns (SPEC 2.4)."""
import torch
import torch.utils._pytree as pytree

from tokenmixup import TokenMixupOutput


def _output() -> TokenMixupOutput:
    return TokenMixupOutput(
        logits=torch.randn(2, 3),
        target=torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]),
        aux_loss=torch.tensor(0.25),
        stats={'htm0/easy': torch.tensor(1.0), 'htm0/mixed': torch.tensor(0.0)},
    )


def test_is_a_named_tuple_with_fields_logits_target_aux_loss_stats_in_that_order():
    assert issubclass(TokenMixupOutput, tuple)
    assert TokenMixupOutput._fields == ('logits', 'target', 'aux_loss', 'stats')
    out = _output()
    logits, target, aux_loss, stats = out  # unpacks positionally like any tuple
    assert logits is out.logits and target is out.target and aux_loss is out.aux_loss and stats is out.stats
    assert out[0] is out.logits and out[3] is out.stats


def test_survives_pytree_flatten_and_unflatten():
    """DDP and torch.compile walk outputs with torch.utils._pytree: every tensor is a leaf, and the
    rebuilt value is a TokenMixupOutput again with the same tensors."""
    out = _output()
    leaves, spec = pytree.tree_flatten(out)
    assert len(leaves) == 3 + len(out.stats)
    assert all(isinstance(leaf, torch.Tensor) for leaf in leaves)
    assert any(leaf is out.logits for leaf in leaves) and any(leaf is out.stats['htm0/easy'] for leaf in leaves)
    rebuilt = pytree.tree_unflatten(leaves, spec)
    assert type(rebuilt) is TokenMixupOutput
    assert rebuilt.logits is out.logits and rebuilt.target is out.target and rebuilt.aux_loss is out.aux_loss
    assert rebuilt.stats.keys() == out.stats.keys()
    assert all(rebuilt.stats[key] is out.stats[key] for key in out.stats)


def test_pytree_map_transforms_every_tensor_and_keeps_the_type():
    """What DDP does to outputs (e.g. moving or detaching every tensor) keeps the protocol."""
    doubled = pytree.tree_map(lambda tensor: tensor * 2, _output())
    assert isinstance(doubled, TokenMixupOutput)
    torch.testing.assert_close(doubled.aux_loss, torch.tensor(0.5))
    torch.testing.assert_close(doubled.stats['htm0/easy'], torch.tensor(2.0))
