"""ONNX export of the eval model with torch.onnx's legacy exporter, the default of timm's onnx_export.py
(docs/other-tools.md): the exported graph gives torch's logits under onnxruntime."""
import io

import numpy as np
import pytest
import timm
import torch

import models  # noqa: F401  (registers the zoo with timm)

onnxruntime = pytest.importorskip('onnxruntime')  # in the test extra; the export itself needs the onnx package


@pytest.mark.parametrize('name, kwargs', [
    ('cct_2_3x2_htm_vtm', {}),
    ('vit_tiny_patch16_224_htm_vtm', dict(img_size=32)),
    ('tokenmixup_vit', dict(base_model='deit_tiny_patch16_224', img_size=32, htm_layers=(2,), vtm_layers=(3,))),
])
def test_the_legacy_exporter_gives_torchs_logits(name, kwargs):
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=['input'],
                      output_names=['logits'], dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=['CPUExecutionProvider'])
    batch = torch.randn(3, 3, 32, 32)  # another batch size than the export's
    got, = session.run(None, {'input': batch.numpy()})
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
