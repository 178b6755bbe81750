"""On a CUDA device: what the CPU suite cannot show (docs/design.md §9, GPU readiness).

Every test here is marked `cuda` and skipped where `torch.cuda.is_available()` is false (tests/conftest.py);
`benchmarks/device_check.sh` runs them, then the saliency and train-step benchmarks, on a GPU machine.
"""
import csv
from pathlib import Path
from typing import Dict, Iterator

import pytest
import timm
import torch
from timm.data.loader import PrefetchLoader
from timm.loss import SoftTargetCrossEntropy
from torch.profiler import ProfilerActivity, profile

import models  # noqa: F401  (registers the zoo)
import train
from conftest import variant_base_name
from tokenmixup_tools.runtime import create_autocast, create_loss_scaler

pytestmark = pytest.mark.cuda
DEVICE = torch.device('cuda')
# a pair of each kind: CCT at 32x32 and ViT at 224x224
PARITY_NAMES = ['cct_2_3x2_htm', 'cct_2_3x2_vtm', 'cct_2_3x2_htm_vtm', 'cct_7_3x1_htm', 'cct_7_3x1_vtm',
                'cct_7_3x1_htm_vtm', 'vit_tiny_patch16_224_htm', 'vit_tiny_patch16_224_vtm',
                'vit_tiny_patch16_224_htm_vtm']


@pytest.fixture
def exact_kernels() -> Iterator[None]:
    """float32 kernels without TF32 and with deterministic cuDNN algorithms, so CUDA can be compared exactly."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def _images(batch_size: int, size: int = 32) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))


def _labels(batch_size: int, num_classes: int = 10) -> torch.Tensor:
    return torch.arange(batch_size) % num_classes


def _mixing_model(name: str, **kwargs) -> torch.nn.Module:
    """A deterministic train-mode model whose HTM finds every sample easy and replaces every less salient token."""
    return timm.create_model(name, num_classes=10, tau=1e9, rho=0.0, drop_path_rate=0., attn_drop_rate=0.,
                             **kwargs).train()


def _loss(out) -> torch.Tensor:
    return SoftTargetCrossEntropy()(out.logits.float(), out.target) + out.aux_loss


def test_train_py_on_cuda_feeds_its_batches_through_timm_prefetcher(tmp_path, monkeypatch):
    """train.py on CUDA: the batches come through timm's PrefetchLoader (on by default there), pinned and with
    workers, and the epoch's loss and HTM statistics are finite."""
    batches = []
    original_iter = PrefetchLoader.__iter__

    def counting_iter(self):
        for batch in original_iter(self):
            batches.append(batch[0].device.type)
            yield batch

    monkeypatch.setattr(PrefetchLoader, '__iter__', counting_iter)
    result = train.main(['--device', 'cuda', '--epochs', '2', '--batch-size', '64', '--workers', '2', '--pin-mem',
                         '--warmup-epochs', '0', '--no-progress', '--output', str(tmp_path), '--experiment', 'run'])
    assert batches and set(batches) == {'cuda'}
    with open(Path(result['output_dir']) / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        assert float(row['train_loss']) == pytest.approx(float(row['train_loss']))  # not NaN
        assert float(row['train_loss']) < 3.0 and 0 <= float(row['eval_top1']) <= 100
        assert float(row['train_htm1_mixed_samples']) >= 0
    assert float(rows[1]['eval_top1']) > 20.0  # it learns: chance is 10%


def test_float16_loss_scaler_skips_a_step_with_non_finite_gradients():
    """fp16 with timm's NativeScaler (what train.py uses for --amp on CUDA): a step whose gradients overflow leaves
    every weight as it was and lowers the scale; the next finite step updates the weights."""
    model = _mixing_model('cct_2_3x2_htm_vtm').to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = create_loss_scaler(DEVICE, True, 'float16')
    autocast = create_autocast(DEVICE, True, 'float16')
    assert scaler is not None
    images, labels = _images(16).to(DEVICE), _labels(16).to(DEVICE)
    head_weight = model.get_classifier().weight
    before = {key: value.clone() for key, value in model.state_dict().items()}
    head_before = head_weight.detach().clone()
    scale = scaler._scaler.get_scale()

    hook = head_weight.register_hook(lambda grad: torch.full_like(grad, float('inf')))
    with autocast():
        out = model(images, labels)
    scaler(_loss(out), optimizer)
    hook.remove()
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert scaler._scaler.get_scale() < scale

    optimizer.zero_grad(set_to_none=True)
    with autocast():
        out = model(images, labels)
    scaler(_loss(out), optimizer)
    assert not torch.equal(head_weight, head_before)


def test_bfloat16_autocast_trains_with_finite_gradients():
    """bf16 autocast (no scaler): HTM mixes, the logits are bfloat16, the loss and every gradient are finite."""
    model = _mixing_model('cct_2_3x2_htm_vtm').to(DEVICE)
    assert create_loss_scaler(DEVICE, True, 'bfloat16') is None
    with create_autocast(DEVICE, True, 'bfloat16')():
        out = model(_images(16).to(DEVICE), _labels(16).to(DEVICE))
    assert out.logits.dtype == torch.bfloat16
    assert out.stats[1].mixed_samples.item() > 0
    loss = _loss(out)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('name, size', [('cct_2_3x2_htm_vtm', 32), ('vit_tiny_patch16_224_htm', 224)])
def test_htm_on_cuda_mixes_as_on_the_cpu(name, size, exact_kernels):
    """The same weights and inputs in train mode: the same samples mixed, the same tokens replaced, and targets,
    logits and ScoreNet loss equal to the CPU's within float32 tolerance."""
    cpu_model = _mixing_model(name)
    cuda_model = _mixing_model(name).to(DEVICE)
    cuda_model.load_state_dict(cpu_model.state_dict())
    images, labels = _images(8, size), _labels(8)
    cpu_out = cpu_model(images, labels)
    cuda_out = cuda_model(images.to(DEVICE), labels.to(DEVICE))
    for block, stats in cpu_out.stats.items():
        assert stats.mixed_samples.item() > 0
        assert cuda_out.stats[block].mixed_samples.item() == stats.mixed_samples.item()
        assert cuda_out.stats[block].replaced_tokens.item() == pytest.approx(stats.replaced_tokens.item())
    torch.testing.assert_close(cuda_out.target.cpu(), cpu_out.target, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cuda_out.logits.cpu(), cpu_out.logits, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(cuda_out.aux_loss.cpu(), cpu_out.aux_loss, rtol=1e-3, atol=1e-5)


def _device_to_host_copies(run) -> int:
    """How many device-to-host copies `run()` makes, as the CUDA profiler records them."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as recorded:
        run()
        torch.cuda.synchronize()
    return sum(event.count for event in recorded.key_averages() if 'Memcpy DtoH' in event.key)


def test_copy_counter_sees_a_host_copy():
    """Guards the test below: one `.item()` is one copy, arithmetic on the device none."""
    value = torch.ones(3, device=DEVICE)
    assert _device_to_host_copies(lambda: value.sum().item()) == 1
    assert _device_to_host_copies(lambda: value * 2) == 0


@pytest.mark.parametrize('htm_layers', [(1,), (1, 2)])
def test_a_training_forward_copies_to_the_host_once_per_htm_layer(htm_layers):
    """docs/design.md §9: one device-to-host copy per HTM layer per step (the gain matrix for the matching), and
    no other in the training forward."""
    model = _mixing_model('cct_4_3x2_htm', htm_layers=htm_layers).to(DEVICE)
    images, labels = _images(16).to(DEVICE), _labels(16).to(DEVICE)
    model(images, labels)  # warm up: the first CUDA calls initialise lazily
    results = []
    assert _device_to_host_copies(lambda: results.append(model(images, labels))) == len(htm_layers)
    assert all(stats.mixed_samples.item() > 0 for stats in results[0].stats.values())


@pytest.mark.parametrize('name', PARITY_NAMES)
def test_eval_logits_on_cuda_equal_the_base_models(name, exact_kernels):
    """Eval mode on CUDA: a variant holding its base's weights gives the base's logits bit for bit."""
    variant = timm.create_model(name).eval().to(DEVICE)
    base = timm.create_model(variant_base_name(name), num_classes=variant.num_classes).eval().to(DEVICE)
    variant.load_state_dict(base.state_dict(), strict=False)
    images = _images(4, variant.pretrained_cfg['input_size'][-1]).to(DEVICE)
    with torch.no_grad():
        assert torch.equal(variant(images), base(images))


def _peak_bytes(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, training: bool) -> int:
    """Peak CUDA memory allocated by one forward (and backward, when training) above what was allocated before."""
    model.train(training)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if training:  # a base model takes the target too, and gives it back as a one-hot TokenMixupOutput
        _loss(model(images, labels)).backward()
    else:
        with torch.no_grad():
            model(images)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    model.zero_grad(set_to_none=True)
    return peak


def _memory(name: str, base_name: str) -> Dict[str, float]:
    images, labels = _images(32).to(DEVICE), _labels(32).to(DEVICE)
    variant = _mixing_model(name).to(DEVICE)
    base = timm.create_model(base_name, num_classes=10, drop_path_rate=0., attn_drop_rate=0.).to(DEVICE)
    _peak_bytes(variant, images, labels, True), _peak_bytes(base, images, labels, True)  # warm up the allocator
    return {mode: _peak_bytes(variant, images, labels, mode == 'train') / _peak_bytes(base, images, labels,
                                                                                        mode == 'train')
            for mode in ('train', 'eval')}


@pytest.mark.parametrize('name', ['cct_7_3x1_htm', 'cct_7_3x1_vtm', 'cct_7_3x1_htm_vtm'])
def test_peak_memory_of_each_variant_against_its_base(name):
    """Peak allocated memory of a training step (every sample mixed) and of an eval forward, variant / base: eval
    runs the base's kernels (the same memory), training stays within 10% (docs/design.md §9 gives the goals that
    benchmarks/train_step.py reports)."""
    ratios = _memory(name, 'cct_7_3x1')
    assert ratios['eval'] == pytest.approx(1.0, abs=0.01)
    assert ratios['train'] <= 1.10
