"""ONNX export of the eval model (docs/other-tools.md): every registered variant through torch.onnx's legacy exporter
(the default of timm's onnx_export.py) and through the dynamo exporter; every exported graph, run by onnxruntime at
another batch size than the export's, gives torch's logits. The dynamo export takes seconds per model, so only one
variant of each kind of each model structure runs in CI; the others are marked slow."""
import io

import numpy as np
import pytest
import timm
import torch

import models  # noqa: F401  (registers the zoo with timm)

onnxruntime = pytest.importorskip('onnxruntime')  # in the test extra, with onnx and onnxscript the exporters need

VARIANTS = sorted(name for name in timm.list_models() if name.endswith(('_htm', '_vtm')))
# any timm ViT as a TokenMixup model
ANY_VIT = ('tokenmixup_vit', dict(base_model='deit_tiny_patch16_224', htm_layers=(2,), vtm_layers=(3,)))
# the dynamo cases of CI: one of each structure (CCT at 32 and at 224, ViT with a class token, with registers and
# average pooling, without a class position embedding as in DeiT III), with HTM, VTM and both where they differ
DYNAMO_CASES = ['cct_2_3x2_htm', 'cct_2_3x2_vtm', 'cct_2_3x2_htm_vtm', 'cct_14_7x2_224_htm_vtm',
                'vit_tiny_patch16_224_htm', 'vit_tiny_patch16_224_vtm', 'vit_tiny_patch16_224_htm_vtm',
                'vit_medium_patch16_reg4_gap_256_htm_vtm', 'deit3_small_patch16_224_htm_vtm']


def _small(name: str, **kwargs) -> torch.nn.Module:
    """The registered variant at 32x32, its ViT blocks narrowed to width 64 (same depth, same TokenMixup layers):
    the graph an export traces is the variant's; only the sizes shrink."""
    if not name.startswith('cct_'):
        kwargs = dict(dict(embed_dim=64, num_heads=2), **kwargs)
    return timm.create_model(name, num_classes=10, img_size=32, **kwargs).eval()


def _check_runtime_logits(onnx_bytes: bytes, model: torch.nn.Module) -> None:
    session = onnxruntime.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])
    batch = torch.randn(3, 3, 32, 32)  # another batch size than the export's
    got, = session.run(None, {'input': batch.numpy()})
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_every_variant_is_covered():
    assert len(VARIANTS) == 57
    assert set(DYNAMO_CASES) <= set(VARIANTS)


@pytest.mark.parametrize('name, kwargs', [(name, {}) for name in VARIANTS] + [ANY_VIT])
def test_the_legacy_exporter_gives_torchs_logits(name, kwargs, one_torch_thread):
    model = _small(name, **kwargs)
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), buffer, dynamo=False, opset_version=17,
                      input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})
    _check_runtime_logits(buffer.getvalue(), model)


@pytest.mark.parametrize('name, kwargs', [
    pytest.param(name, {}, marks=() if name in DYNAMO_CASES else pytest.mark.slow) for name in VARIANTS] + [ANY_VIT])
def test_the_dynamo_exporter_gives_torchs_logits(name, kwargs, one_torch_thread):
    pytest.importorskip('onnxscript')  # in the test extra: the dynamo exporter is written with it
    model = _small(name, **kwargs)
    program = torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), dynamo=True, optimize=False, verbose=False,
                                input_names=['input'], output_names=['logits'],
                                dynamic_shapes=({0: torch.export.Dim('batch')},))
    _check_runtime_logits(program.model_proto.SerializeToString(), model)
