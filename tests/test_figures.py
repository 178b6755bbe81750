"""visualize.py and tokenmixup_tools.figures: the saliency maps, the HTM mix and the curriculum plot.

The pictures are made from the shipped `cct_2_3x2_htm_vtm.digits` (the command's default model), as a user makes
them. Each PNG must be a valid image of the documented size; the numbers beside it must be the model's own: the
correlations are recomputed from the saved maps, and the mask drawn is compared with the mask the model returned
from the very forward the command ran.
"""
import csv
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
import visualize
from tokenmixup_tools.cli import UsageError
from tokenmixup_tools.figures import CURRICULUM_FIGURE_PX, MIX_ROW_PX, SALIENCY_FIGURE_PX, correlation

REPO_ROOT = Path(__file__).resolve().parents[1]



def png_size(path: Path):
    """The (width, height) of a valid PNG file (PIL verifies its chunks and checksums)."""
    with Image.open(path) as image:
        assert image.format == 'PNG'
        image.verify()
    with Image.open(path) as image:
        image.load()
        return image.size


def test_saliency_writes_one_png_per_image_and_correlations_that_the_saved_maps_reproduce(tmp_path):
    result = visualize.main(['saliency', '--count', '3', '--output', str(tmp_path)])
    saved = json.loads((tmp_path / 'saliency.json').read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved['model'] == 'cct_2_3x2_htm_vtm.digits' and saved['block'] == 1  # its HTM block
    rows, cols = saved['grid']
    assert len(saved['images']) == 3
    for index, record in enumerate(saved['images']):
        assert png_size(tmp_path / record['png']) == SALIENCY_FIGURE_PX
        assert record['source'] == f'embedded/digits/validation[{index}]'
        assert record['gradient_target'] == record['label']  # labelled images: the gradient explains the label
        maps = {key: np.array(value) for key, value in record['maps'].items()}
        assert all(value.shape == (rows, cols) for value in maps.values())
        for key in ('attention', 'rollout'):
            expected = np.corrcoef(maps[key].ravel(), maps['gradient'].ravel())[0, 1]
            assert record['correlation_to_gradient'][key] == pytest.approx(expected, abs=1e-9)
    for key, value in saved['mean_correlation_to_gradient'].items():
        assert value == pytest.approx(np.mean([r['correlation_to_gradient'][key] for r in saved['images']]))


def test_saliency_of_image_files_explains_the_prediction(tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    generator = np.random.default_rng(0)
    for name in ('b.png', 'a.png'):
        Image.fromarray(generator.integers(0, 255, (12, 10), dtype=np.uint8), mode='L').save(folder / name)
    (folder / 'notes.txt').write_text('not an image')
    result = visualize.main(['saliency', '--images', str(folder), '--output', str(tmp_path / 'out')])
    assert [Path(record['source']).name for record in result['images']] == ['a.png', 'b.png']
    for record in result['images']:
        assert record['label'] is None and record['gradient_target'] == record['prediction']
        assert png_size(tmp_path / 'out' / record['png']) == SALIENCY_FIGURE_PX


def test_mix_draws_the_mask_and_partners_the_model_returned(tmp_path, monkeypatch):
    returned = []
    load_model = visualize.load_model

    def load_and_watch(args):
        model, name, data_config = load_model(args)
        model.register_forward_hook(lambda module, inputs, output: returned.append(output))
        return model, name, data_config

    monkeypatch.setattr(visualize, 'load_model', load_and_watch)
    result = visualize.main(['mix', '--batch-size', '16', '--pairs', '3', '--output', str(tmp_path)])
    out, = returned  # one forward: the training forward whose mix is drawn
    stats = out.stats[result['block']]
    assert png_size(tmp_path / 'mix.png') == (MIX_ROW_PX[0], MIX_ROW_PX[1] * 3)
    saved = json.loads((tmp_path / 'mix.json').read_text())
    assert len(saved['pairs']) == 3 and saved['mixed_samples'] == int(stats.mixed_samples)
    rows, cols = saved['grid']
    mixed = stats.mask.any(dim=1).nonzero().flatten().tolist()
    assert [pair['sample'] for pair in saved['pairs']] == mixed[:3]
    for pair in saved['pairs']:
        sample = pair['sample']
        assert torch.equal(torch.tensor(pair['mask'], dtype=torch.bool), stats.mask[sample].reshape(rows, cols))
        assert pair['partner'] == int(stats.partner[sample]) != sample
        assert pair['target'] == pytest.approx(out.target[sample].tolist())
        assert sum(pair['mask'][r][c] for r in range(rows) for c in range(cols)) > 0


def test_mix_of_a_model_without_htm_says_so(tmp_path):
    with pytest.raises(UsageError, match='has no HTM layer'):
        visualize.main(['mix', '--model', 'cct_2_3x2.digits', '--output', str(tmp_path)])


def test_missing_images_are_named(tmp_path):
    with pytest.raises(UsageError, match='--images .*absent.png: no such file'):
        visualize.main(['saliency', '--images', str(tmp_path / 'absent.png'), '--output', str(tmp_path)])


def _write_summary(path: Path, epochs: int, blocks=(1,)) -> None:
    fields = ['epoch', 'train_loss', 'eval_top1']
    fields += [f'train_htm{b}_{k}' for b in blocks for k in ('mixed_samples', 'replaced_tokens')]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for epoch in range(epochs):
            row = {'epoch': epoch, 'train_loss': 1.0, 'eval_top1': 10 + epoch}
            row.update({f'train_htm{b}_mixed_samples': 2 * epoch for b in blocks})
            row.update({f'train_htm{b}_replaced_tokens': epoch for b in blocks})
            writer.writerow(row)


def test_curriculum_plots_a_summary_beside_it(tmp_path):
    _write_summary(tmp_path / 'summary.csv', 5, blocks=(1, 3))
    result = visualize.main(['curriculum', str(tmp_path)])
    assert result['htm_blocks'] == [1, 3] and result['epochs'] == list(range(5))
    assert png_size(tmp_path / 'curriculum.png') == CURRICULUM_FIGURE_PX


def test_curriculum_of_something_else_is_refused(tmp_path):
    (tmp_path / 'summary.csv').write_text('a,b\n1,2\n')
    with pytest.raises(UsageError, match='not a train.py summary.csv'):
        visualize.main(['curriculum', str(tmp_path / 'summary.csv')])
    with pytest.raises(UsageError, match='no summary.csv'):
        visualize.main(['curriculum', str(tmp_path / 'elsewhere')])


def test_without_matplotlib_the_commands_say_how_to_install_it(tmp_path, monkeypatch, caplog):
    _write_summary(tmp_path / 'summary.csv', 2)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)
    for command in (['curriculum', str(tmp_path)], ['saliency', '--output', str(tmp_path)]):
        with pytest.raises(UsageError, match=r"needs matplotlib, which is not installed: pip install -e '\.\[viz\]'"):
            visualize.main(command)
    with caplog.at_level(logging.INFO, logger='train'):
        train.draw_run_curriculum(str(tmp_path))  # train.py: a note, no picture, no failure
    assert not (tmp_path / 'curriculum.png').exists()
    assert any("pip install -e '.[viz]'" in record.getMessage() for record in caplog.records)


def test_correlation_is_pearsons():
    first, second = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    got = correlation(first, second)
    for index in range(3):
        expected = np.corrcoef(first[index].flatten().numpy(), second[index].flatten().numpy())[0, 1]
        assert float(got[index]) == pytest.approx(expected, abs=1e-6)


def test_the_pictures_the_docs_show_exist_at_their_documented_sizes():
    """docs/pictures.md embeds PNGs made from the shipped model with the documented commands."""
    page = (REPO_ROOT / 'docs' / 'pictures.md').read_text()
    shown = [f'docs/{path}' for path in re.findall(r'!\[[^\]]*\]\(([^)]+\.png)\)', page)]
    sizes = {'saliency': SALIENCY_FIGURE_PX, 'mix': (MIX_ROW_PX[0], MIX_ROW_PX[1] * 3),
             'curriculum': CURRICULUM_FIGURE_PX}
    assert {next(kind for kind in sizes if kind in path) for path in shown} == set(sizes)
    for path in shown:
        kind = next(kind for kind in sizes if kind in path)
        assert png_size(REPO_ROOT / path) == sizes[kind], path


def test_saliency_of_a_one_channel_model_feeds_it_one_channel_images(tmp_path):
    """A model built with in_chans=1 (train.py --in-chans 1) from a plain state dict: grey inputs, grey pictures."""
    import timm
    model = timm.create_model('cct_2_3x2_htm_vtm', num_classes=10, in_chans=1)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'grey.pth')
    result = visualize.main(['saliency', '--checkpoint', str(tmp_path / 'grey.pth'), '--model', 'cct_2_3x2_htm_vtm',
                             '--num-classes', '10', '--model-kwargs', 'in_chans=1', '--count', '1',
                             '--output', str(tmp_path / 'out')])
    record, = result['images']
    assert png_size(tmp_path / 'out' / record['png']) == SALIENCY_FIGURE_PX
