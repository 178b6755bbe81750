"""TokenMixupOutput: what `model(x, target)` returns (docs/design.md §3)."""
import torch
import torch.utils._pytree as pytree

from tokenmixup import HTMStatistics, TokenMixupOutput


def _statistics(easy: float) -> HTMStatistics:
    return HTMStatistics(*(torch.tensor(easy + index) for index in range(8)), torch.zeros(0, dtype=torch.bool),
                         torch.zeros(0, dtype=torch.long))


def _output() -> TokenMixupOutput:
    return TokenMixupOutput(
        logits=torch.randn(2, 3),
        target=torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]),
        aux_loss=torch.tensor(0.25),
        stats={0: _statistics(1.0), 3: _statistics(10.0)},
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
    assert len(leaves) == 3 + 10 * len(out.stats)
    assert all(isinstance(leaf, torch.Tensor) for leaf in leaves)
    assert any(leaf is out.logits for leaf in leaves) and any(leaf is out.stats[0].easy_samples for leaf in leaves)
    rebuilt = pytree.tree_unflatten(leaves, spec)
    assert type(rebuilt) is TokenMixupOutput
    assert rebuilt.logits is out.logits and rebuilt.target is out.target and rebuilt.aux_loss is out.aux_loss
    assert rebuilt.stats.keys() == out.stats.keys()
    assert all(type(rebuilt.stats[block]) is HTMStatistics for block in out.stats)
    assert all(rebuilt.stats[block].gain is out.stats[block].gain for block in out.stats)


def test_pytree_map_transforms_every_tensor_and_keeps_the_type():
    """What DDP does to outputs (e.g. moving or detaching every tensor) keeps the protocol."""
    doubled = pytree.tree_map(lambda tensor: tensor * 2, _output())
    assert isinstance(doubled, TokenMixupOutput)
    torch.testing.assert_close(doubled.aux_loss, torch.tensor(0.5))
    torch.testing.assert_close(doubled.stats[0].easy_samples, torch.tensor(2.0))
    torch.testing.assert_close(doubled.stats[3].gain_max, torch.tensor(32.0))
