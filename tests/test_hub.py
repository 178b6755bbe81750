"""hub.publish and Hub loading, offline (issue: Hugging Face Hub).

One real one-epoch `train.py` run (the quickstart model at 16x16) and its `validate.py` results are
shared by the module; the checkpoint is exported with one `python -m hub.publish` call and must come back,
through `local-dir:` and through a populated Hugging Face cache as `hf-hub:`, as the exact model: the
same TokenMixup settings, the same eval logits and validate.py's top-1. Pushing goes to a fake `HfApi`
that records its calls. Nothing here touches the network (conftest sets HF_HUB_OFFLINE=1).
"""
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import safetensors.torch
import timm
import timm.data
import torch
from PIL import Image
from timm.models import generate_default_cfgs

import train  # tools at the repository root: setup.cfg puts the root on pytest's python path
import validate
from hub import publish
from models import cct, vit_tokenmixup
from tokenmixup.settings import SETTING_NAMES
from tokenmixup_tools.checkpoints import create_model_from_config, load_training_checkpoint
from tokenmixup_tools.cli import UsageError

REPO_ID = 'zoo-test/cct_2_3x2_htm_vtm.digits'
COMMIT = 'c0ffee' + '0' * 34  # a 40-hex-digit commit hash, as the Hub cache names snapshots
QUICK_RUN = ['--epochs', '1', '--img-size', '16', '--batch-size', '64', '--workers', '0', '--warmup-epochs', '0',
             '--no-progress', '--log-interval', '1000', '--experiment', 'run']


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(autouse=True)
def _no_token(monkeypatch, tmp_path):
    """No Hub token anywhere, unless a test passes one."""
    for name in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """`python train.py` for one epoch, then `validate.py --checkpoint ... --results-file results.csv`."""
    output = tmp_path_factory.mktemp('train')
    run_dir = Path(train.main(QUICK_RUN + ['--output', str(output)])['output_dir'])
    checkpoint = str(run_dir / 'last.pth.tar')
    results_file = str(run_dir / 'results.csv')
    row, = validate.main(['--checkpoint', checkpoint, '--results-file', results_file])
    return {'checkpoint': checkpoint, 'results_file': results_file, 'row': row}


@pytest.fixture(scope='module')
def source_model(run):
    """The model as the checkpoint holds it (rebuilt from its record, main weights)."""
    checkpoint = load_training_checkpoint(run['checkpoint'])
    model = create_model_from_config(checkpoint['model_config'])
    model.load_state_dict(checkpoint['state_dict'])
    return model.eval()


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
    """The one command: export the checkpoint (no push, so no token) with its results."""
    local_dir = tmp_path_factory.mktemp('export') / 'cct-digits'
    result = publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir), '--no-push',
                           '--results-file', run['results_file']])
    assert result['local_dir'] == str(local_dir) and not result['pushed']
    return local_dir


def _images(n: int = 4, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _populate_hub_cache(cache: Path, repo_id: str, files: dict) -> None:
    """Lay `files` ({name: source path}) out as huggingface_hub's cache holds repo_id at `main`."""
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    snapshot = repo / 'snapshots' / COMMIT
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        (snapshot / name).write_bytes(Path(source).read_bytes())
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(COMMIT)


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache in tmp, used by huggingface_hub (offline) from now on."""
    cache = tmp_path / 'hf-cache'
    cache.mkdir()
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    return cache


# ---------------------------------------------------------------------------------------------
# the exported folder

def test_export_writes_weights_config_and_card_and_nothing_else(exported):
    assert sorted(os.listdir(exported)) == ['README.md', 'config.json', 'model.safetensors']
    assert sorted(os.listdir(exported.parent)) == [exported.name]  # no temporary folder left behind


def test_config_json_records_every_tokenmixup_setting_explicitly(exported, run):
    """config.json: timm's layout with architecture, num_classes, label names and model_args holding every
    TokenMixup setting (lists for the layer indices) as the checkpoint recorded it."""
    config = json.loads((exported / 'config.json').read_text())
    record = load_training_checkpoint(run['checkpoint'])['model_config']
    assert config['architecture'] == 'cct_2_3x2_htm_vtm'
    assert config['num_classes'] == 10 and 'num_classes' not in config['model_args']
    assert config['label_names'] == [str(digit) for digit in range(10)]
    for key in SETTING_NAMES:
        assert config['model_args'][key] == record['model_kwargs'][key], key
    assert config['model_args']['htm_layers'] == [1] and config['model_args']['vtm_layers'] == [1]
    assert config['model_args']['img_size'] == 16
    assert 'drop_rate' not in config['model_args']  # training-only, as in timm's exports
    pretrained_cfg = config['pretrained_cfg']
    assert pretrained_cfg['tag'] == 'digits'  # the repo id's ARCH.TAG
    assert pretrained_cfg['input_size'] == [3, 16, 16] and pretrained_cfg['num_classes'] == 10
    assert pretrained_cfg['classifier'] == ['head', 'htm.1.scorenet.head']
    assert not {'url', 'file', 'hf_hub_id', 'source'} & set(pretrained_cfg)


def test_weights_file_holds_the_checkpoint_state_dict(exported, run):
    saved = safetensors.torch.load_file(str(exported / 'model.safetensors'))
    state_dict = load_training_checkpoint(run['checkpoint'])['state_dict']
    assert sorted(saved) == sorted(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(saved[key], value), key


def test_model_card_renders_settings_recipe_results_usage_citation_licence(exported, run):
    card = (exported / 'README.md').read_text()
    assert card.startswith('---\n') and 'library_name: timm' in card and 'license: apache-2.0' in card
    for key in SETTING_NAMES:
        assert f'| `{key}` |' in card, key
    assert '| `htm_layers` | 1 |' in card and '| `tau` | 1 |' in card and '| `mask_reference` | own |' in card
    assert '| epochs | 1 |' in card and '| optimizer | adamw |' in card and '| image size | 16 |' in card
    row = run['row']
    assert re.search(rf'\| cct_2_3x2_htm_vtm \| {row["top1"]:.6g} \| {row["top1_err"]:.6g} \|', card)
    assert f"timm.create_model('hf-hub:{REPO_ID}', pretrained=True)" in card
    assert 'import models' in card
    assert '@inproceedings{choi2022tokenmixup' in card and 'hassani2021escaping' in card
    assert '## Licence' in card


# ---------------------------------------------------------------------------------------------
# loading: local-dir:, hf-hub: (offline cache), train.py / validate.py

def test_local_dir_rebuilds_the_exact_model(exported, source_model):
    """Issue: timm.create_model('local-dir:DIR', pretrained=True) rebuilds the exact model."""
    model = timm.create_model(f'local-dir:{exported}', pretrained=True).eval()
    assert type(model) is type(source_model)
    assert model.tokenmixup_cfg == source_model.tokenmixup_cfg
    assert model.pretrained_cfg['tag'] == 'digits'
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), source_model(x))


def test_the_folder_builds_as_transformers_timm_wrapper_builds_it(exported, source_model):
    """transformers' TimmWrapper (AutoModelForImageClassification on a timm folder) calls
    timm.create_model(architecture, pretrained=False, num_classes=num_labels, **model_args) and then loads
    model.safetensors: model_args must not repeat num_classes, and the result must be the exported model."""
    config = json.loads((exported / 'config.json').read_text())
    model = timm.create_model(config['architecture'], pretrained=False, num_classes=len(config['label_names']),
                              **config['model_args'])
    model.load_state_dict(safetensors.torch.load_file(str(exported / 'model.safetensors')))
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), source_model(x), rtol=0, atol=0)
    assert model.tokenmixup_cfg == source_model.tokenmixup_cfg


def test_transformers_loads_the_folder_and_gives_its_logits(exported, source_model):
    """The real thing, where transformers is installed (the test extra has it): AutoModelForImageClassification on
    the folder is TimmWrapper, whose logits are the exported model's, and its image processor is the eval
    transform of the run (size, mean, std)."""
    transformers = pytest.importorskip('transformers')
    model = transformers.AutoModelForImageClassification.from_pretrained(str(exported)).eval()
    assert type(model).__name__ == 'TimmWrapperForImageClassification'
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, source_model(x), rtol=0, atol=0)
    processor = transformers.AutoImageProcessor.from_pretrained(str(exported))
    folder_model = timm.create_model(f'local-dir:{exported}', pretrained=False)  # the run's eval preprocessing
    data_config = timm.data.resolve_data_config({}, model=folder_model)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    pixels = processor(image, return_tensors='pt')['pixel_values']
    assert pixels.shape == (1, *data_config['input_size']) == (1, 3, 16, 16)
    transform = timm.data.create_transform(**data_config)
    torch.testing.assert_close(pixels[0], transform(image), rtol=0, atol=1e-5)


def test_validate_on_local_dir_reproduces_the_checkpoint_top1(exported, run):
    """Done when: local-dir: loading reproduces validate.py's top-1 on the checkpoint."""
    row, = validate.main(['--model', f'local-dir:{exported}', '--pretrained', '--dataset', 'embedded/digits'])
    assert row['top1'] == run['row']['top1'] and row['loss'] == run['row']['loss']
    assert (row['img_size'], row['crop_pct'], row['interpolation']) == (16, 1.0, 'bicubic')


def test_hf_hub_loads_from_the_offline_cache_and_reproduces_the_top1(exported, run, source_model, hub_cache):
    """Done when: (offline, cached) hf-hub: loading gives the same logits and validate.py's top-1."""
    _populate_hub_cache(hub_cache, REPO_ID, {name: exported / name for name in publish.EXPORTED_FILES})
    model = timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True).eval()
    assert model.tokenmixup_cfg == source_model.tokenmixup_cfg
    assert model.pretrained_cfg['hf_hub_id'] == REPO_ID
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), source_model(x))
    row, = validate.main(['--model', f'hf-hub:{REPO_ID}', '--pretrained', '--dataset', 'embedded/digits'])
    assert row['top1'] == run['row']['top1']


def test_train_from_a_local_dir_records_the_real_architecture(exported, tmp_path):
    """train.py --model local-dir:DIR --pretrained: the checkpoint's record names the architecture and the
    folder's settings, so validate.py and hub.publish rebuild it without the folder."""
    model, record = train.build_model(train.parse_args(['--model', f'local-dir:{exported}', '--pretrained']), 10)
    assert record['architecture'] == 'cct_2_3x2_htm_vtm'
    assert record['model_kwargs']['img_size'] == 16 and record['model_kwargs']['htm_layers'] == [1]
    rebuilt = create_model_from_config(record)
    rebuilt.load_state_dict(model.state_dict())


def test_a_published_tag_loads_through_hf_hub_id(exported, source_model, hub_cache):
    """The registered names gain published checkpoints as timm's own do: a tag whose cfg has hf_hub_id
    (models/cct.py PUBLISHED_CFGS, empty until something is published) loads model.safetensors from the Hub.
    It comes after the weights the name already has (here the shipped `.digits` and the `.fashion_mnist` of its
    base), and `.digits` stays the default."""
    _populate_hub_cache(hub_cache, REPO_ID, {'model.safetensors': exported / 'model.safetensors'})
    published = {'cct_2_3x2_htm_vtm': {'hub': dict(hf_hub_id=REPO_ID, num_classes=10, input_size=(3, 16, 16))}}
    default_cfg = generate_default_cfgs(cct._variant_cfgs(published))['cct_2_3x2_htm_vtm']
    assert list(default_cfg.tags) == ['digits', 'fashion_mnist', 'hub']
    assert cct.PUBLISHED_CFGS == {}  # nothing is published: the README says so
    model = timm.create_model('cct_2_3x2_htm_vtm', pretrained=True,
                              pretrained_cfg=asdict(default_cfg.cfgs['hub'])).eval()
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), source_model(x))


def test_vit_variant_default_pretrained_loads_timms_weights_from_the_hf_cache(hub_cache, tmp_path):
    """vit_tiny_patch16_224_htm's default tag is timm's augreg_in21k_ft_in1k (hf_hub_id
    timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k): loaded strictly, the ScoreNet starts fresh."""
    timm_model = timm.create_model('vit_tiny_patch16_224')
    weights = tmp_path / 'model.safetensors'
    safetensors.torch.save_file(timm_model.state_dict(), str(weights))
    _populate_hub_cache(hub_cache, 'timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k', {'model.safetensors': weights})
    model = timm.create_model('vit_tiny_patch16_224_htm', pretrained=True)
    loaded = model.state_dict()
    assert sorted(key for key in loaded if 'scorenet' not in key) == sorted(timm_model.state_dict())
    for key, value in timm_model.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert any('scorenet' in key for key in loaded)




def test_cct_variant_default_pretrained_loads_the_official_release_from_the_torch_hub_cache(
        monkeypatch, tmp_path, official_cct_layout):
    """cct_7_3x1_htm's default tag is the official c100_300e release URL; with its file in torch hub's
    cache (TORCH_HOME) timm's url path loads it without a download, through checkpoint_filter_fn."""
    source = timm.create_model('cct_7_3x1').eval()
    url = timm.models.get_pretrained_cfg('cct_7_3x1_htm').url
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    official = official_cct_layout(source.state_dict())
    torch.save(official, cache / url.rsplit('/', 1)[-1])
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    model = timm.create_model('cct_7_3x1_htm', pretrained=True).eval()
    x = _images(2, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))  # eval mode: the HTM variant computes its base


# ---------------------------------------------------------------------------------------------
# pushing, against a fake HfApi

class FakeHfApi:
    """Records create_repo / upload_folder calls and what the uploaded folder held."""

    def __init__(self, token, fail_upload=False):
        self.token = token
        self.fail_upload = fail_upload
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', dict(kwargs, repo_id=repo_id)))
        return huggingface_hub.RepoUrl(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        if self.fail_upload:
            raise ConnectionError('the Hub is unreachable')
        files = {name: Path(folder_path, name).read_bytes() for name in sorted(os.listdir(folder_path))}
        self.calls.append(('upload_folder', dict(kwargs, repo_id=repo_id, folder_path=folder_path, files=files)))
        return 'commit-info'


def _factory(apis, **options):
    def make(token):
        apis.append(FakeHfApi(token, **options))
        return apis[-1]
    return make


def test_push_creates_the_repo_and_uploads_the_folder(run, tmp_path):
    apis = []
    result = publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--token', 'hf_fake', '--private',
                           '--results-file', run['results_file']], api_factory=_factory(apis))
    api, = apis
    assert api.token == 'hf_fake'
    (create, create_args), (upload, upload_args) = api.calls
    assert create == 'create_repo' and create_args['repo_id'] == REPO_ID
    assert create_args['private'] is True and create_args['exist_ok'] is True
    assert upload == 'upload_folder' and upload_args['repo_id'] == REPO_ID
    assert sorted(upload_args['files']) == ['README.md', 'config.json', 'model.safetensors']
    card = upload_args['files']['README.md'].decode()
    assert card == result['card'] and '| `kappa` | 3 |' in card and str(run['row']['top1']) in card
    assert json.loads(upload_args['files']['config.json']) == result['config']
    assert not os.path.exists(upload_args['folder_path'])  # the temporary export is gone
    assert result['pushed'] and result['commit'] == 'commit-info'


def test_push_takes_the_token_from_the_environment_and_keeps_the_local_dir(run, tmp_path, monkeypatch):
    monkeypatch.setenv('HF_TOKEN', 'hf_from_env')
    apis = []
    local_dir = tmp_path / 'kept'
    publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir)], api_factory=_factory(apis))
    api, = apis
    assert api.token == 'hf_from_env'
    assert api.calls[1][1]['folder_path'] == str(local_dir)
    assert sorted(os.listdir(local_dir)) == ['README.md', 'config.json', 'model.safetensors']


def test_a_failed_push_says_so_and_keeps_the_local_dir(run, tmp_path):
    local_dir = tmp_path / 'kept'
    with pytest.raises(UsageError, match=f'push to {REPO_ID} failed .*ConnectionError.*exported folder is at'):
        publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir), '--token', 'hf_fake'],
                     api_factory=_factory([], fail_upload=True))
    assert sorted(os.listdir(local_dir)) == ['README.md', 'config.json', 'model.safetensors']


# ---------------------------------------------------------------------------------------------
# options and bad inputs

@pytest.mark.parametrize('repo_id', ['no-owner', 'org/name/extra', 'org/na me', 'org/a--b', 'org/', '/name'])
def test_malformed_repo_id_fails_before_any_work(repo_id, tmp_path):
    with pytest.raises(UsageError, match=f"--repo-id '{re.escape(repo_id)}' is not a Hub repo id: expected ORG/NAME"):
        publish.main([str(tmp_path / 'absent.pth.tar'), '--repo-id', repo_id, '--local-dir', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_push_without_a_token_fails_before_any_work(tmp_path):
    """No --token, no HF_TOKEN, no saved login: a clear error, before the checkpoint is even read."""
    with pytest.raises(UsageError, match='pushing to the Hub needs a token: pass --token, set HF_TOKEN'):
        publish.main([str(tmp_path / 'absent.pth.tar'), '--repo-id', REPO_ID])


def test_no_push_needs_a_local_dir(run):
    with pytest.raises(UsageError, match='--no-push needs --local-dir'):
        publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--no-push'])


def test_non_empty_local_dir_needs_force_and_is_then_replaced(run, tmp_path):
    local_dir = tmp_path / 'out'
    local_dir.mkdir()
    (local_dir / 'old.txt').write_text('keep me')
    export = [run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir), '--no-push']
    with pytest.raises(UsageError, match='--local-dir .* is not empty: pass --force'):
        publish.main(export)
    assert os.listdir(local_dir) == ['old.txt']
    publish.main(export + ['--force'])
    assert sorted(os.listdir(local_dir)) == ['README.md', 'config.json', 'model.safetensors']
    assert sorted(os.listdir(tmp_path)) == ['out']


def test_a_failed_export_leaves_the_existing_folder_untouched(run, tmp_path, monkeypatch):
    """Nothing half-done: the folder is built aside and moved in only once it loads back correctly."""
    local_dir = tmp_path / 'out'
    local_dir.mkdir()
    (local_dir / 'old.txt').write_text('keep me')

    def mismatched(folder, model):
        raise publish.ExportMismatch('simulated')
    monkeypatch.setattr(publish, 'check_folder', mismatched)
    with pytest.raises(UsageError, match='export check failed, nothing written'):
        publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir), '--no-push', '--force'])
    assert os.listdir(local_dir) == ['old.txt']
    assert sorted(os.listdir(tmp_path)) == ['out']

    def broken(folder, model):  # a bug keeps its traceback instead of becoming a one-line usage error
        raise KeyError('simulated bug')
    monkeypatch.setattr(publish, 'check_folder', broken)
    with pytest.raises(KeyError, match='simulated bug'):
        publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir), '--no-push', '--force'])
    assert os.listdir(local_dir) == ['old.txt']
    assert sorted(os.listdir(tmp_path)) == ['out']


def test_model_kwargs_take_precedence_over_the_checkpoint(run, tmp_path):
    """--model-kwargs win over the record: a setting that keeps the weights is exported and rebuilt."""
    local_dir = tmp_path / 'out'
    publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(local_dir), '--no-push',
                  '--tag', 'tau1', '--model-kwargs', 'tau=1.5', 'kappa=2', "mask_reference='first'"])
    config = json.loads((local_dir / 'config.json').read_text())
    assert (config['model_args']['tau'], config['model_args']['kappa'], config['model_args']['mask_reference']) == (
        1.5, 2, 'first')
    assert config['pretrained_cfg']['tag'] == 'tau1'
    settings = timm.create_model(f'local-dir:{local_dir}', pretrained=True).tokenmixup_cfg
    assert (settings.tau, settings.kappa, settings.mask_reference, settings.htm_layers) == (1.5, 2, 'first', (1,))


def test_model_kwargs_num_classes_overrides_the_checkpoint_and_must_fit_the_weights(run, tmp_path):
    with pytest.raises(UsageError, match=r'weights do not fit cct_2_3x2_htm_vtm with 5 classes '
                                         r'\(given --model-kwargs num_classes=5\).*head'):
        publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(tmp_path / 'out'), '--no-push',
                      '--model-kwargs', 'num_classes=5'])
    assert not (tmp_path / 'out').exists()


def test_plain_state_dict_needs_model(run, source_model, tmp_path):
    state_dict_file = tmp_path / 'weights.pth'
    torch.save(load_training_checkpoint(run['checkpoint'])['state_dict'], state_dict_file)
    local_dir = tmp_path / 'out'
    export = [str(state_dict_file), '--repo-id', 'zoo-test/plain', '--local-dir', str(local_dir), '--no-push']
    with pytest.raises(UsageError, match='is a plain state dict .*pass --model NAME'):
        publish.main(export)
    publish.main(export + ['--model', 'cct_2_3x2_htm_vtm', '--model-kwargs', 'img_size=16'])
    config = json.loads((local_dir / 'config.json').read_text())
    assert config['num_classes'] == 10  # read from the classifier weights
    assert config['pretrained_cfg']['tag'] == 'custom' and 'label_names' not in config
    model = timm.create_model(f'local-dir:{local_dir}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(_images()), source_model(_images()))


def test_a_vit_variant_exports_and_loads_back(tmp_path):
    """ViT variants too: timm's weight source is not carried over, the CLS ScoreNet settings are."""
    source = timm.create_model('vit_tiny_patch16_224_htm_vtm', img_size=32, num_classes=10).eval()
    state_dict_file = tmp_path / 'vit.pth'
    torch.save(source.state_dict(), state_dict_file)
    local_dir = tmp_path / 'out'
    publish.main([str(state_dict_file), '--repo-id', 'zoo-test/vit', '--local-dir', str(local_dir), '--no-push',
                  '--model', 'vit_tiny_patch16_224_htm_vtm', '--model-kwargs', 'img_size=32'])
    config = json.loads((local_dir / 'config.json').read_text())
    assert not {'url', 'hf_hub_id'} & set(config['pretrained_cfg']) and config['pretrained_cfg']['custom_load'] is False
    assert config['model_args']['scorenet_pool'] == 'cls' and config['model_args']['vtm_layers'] == [4]
    model = timm.create_model(f'local-dir:{local_dir}', pretrained=True).eval()
    assert model.tokenmixup_cfg == source.tokenmixup_cfg
    x = _images(2, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_use_ema_exports_the_ema_weights_and_needs_them(run, tmp_path):
    with pytest.raises(UsageError, match='--use-ema: .* holds no EMA weights'):
        publish.main([run['checkpoint'], '--repo-id', REPO_ID, '--local-dir', str(tmp_path / 'a'), '--no-push',
                      '--use-ema'])
    checkpoint = load_training_checkpoint(run['checkpoint'])
    checkpoint['state_dict_ema'] = {key: value + 1 if value.is_floating_point() else value
                                    for key, value in checkpoint['state_dict'].items()}
    with_ema = tmp_path / 'ema.pth.tar'
    torch.save(checkpoint, with_ema)
    publish.main([str(with_ema), '--repo-id', REPO_ID, '--local-dir', str(tmp_path / 'b'), '--no-push', '--use-ema'])
    saved = safetensors.torch.load_file(str(tmp_path / 'b' / 'model.safetensors'))
    assert torch.equal(saved['head.weight'], checkpoint['state_dict_ema']['head.weight'])
    assert '| weights | EMA |' in (tmp_path / 'b' / 'README.md').read_text()


@pytest.mark.parametrize('flag, message', [
    ('checkpoint', 'CHECKPOINT .*absent.pth.tar: no such file'),
    ('results', '--results-file .*absent.csv: no such file'),
])
def test_missing_files_are_named(run, tmp_path, flag, message):
    checkpoint = str(tmp_path / 'absent.pth.tar') if flag == 'checkpoint' else run['checkpoint']
    argv = [checkpoint, '--repo-id', REPO_ID, '--local-dir', str(tmp_path / 'out'), '--no-push']
    if flag == 'results':
        argv += ['--results-file', str(tmp_path / 'absent.csv')]
    with pytest.raises(UsageError, match=message):
        publish.main(argv)


def test_default_tag_follows_the_repo_name_else_the_run():
    args = vars(train.parse_args(['--epochs', '300', '--dataset', 'torch/cifar100']))  # as checkpoints store them
    assert publish.default_tag('org/cct_7_3x1_htm.c100_tm', 'cct_7_3x1_htm', args) == 'c100_tm'
    assert publish.default_tag('org/my-model', 'cct_7_3x1_htm', args) == 'cifar100_300e'
    assert publish.default_tag('org/my-model', 'cct_7_3x1_htm', None) == 'custom'


# ---------------------------------------------------------------------------------------------
# an export without a Hub repository

def test_export_only_needs_no_repo_id_and_its_card_loads_the_folder(run, source_model, tmp_path):
    """`--no-push --local-dir DIR` without --repo-id: the card is named after the folder and loads it as
    local-dir:DIR; the tag comes from the run (DATASET_EPOCHSe) or --tag."""
    local_dir = tmp_path / 'digits-export'
    result = publish.main([run['checkpoint'], '--no-push', '--local-dir', str(local_dir)])
    assert result['repo_id'] is None and not result['pushed'] and result['local_dir'] == str(local_dir)
    card = (local_dir / 'README.md').read_text()
    assert card == result['card'] and '# Model card for digits-export\n' in card
    assert f"model = timm.create_model('local-dir:{local_dir}', pretrained=True).eval()" in card
    assert f'python validate.py --model local-dir:{local_dir} --pretrained --dataset embedded/digits' in card
    assert "model = timm.create_model('hf-hub:" not in card and '--model hf-hub:' not in card
    assert result['config']['pretrained_cfg']['tag'] == 'digits_1e'
    model = timm.create_model(f'local-dir:{local_dir}', pretrained=True).eval()
    assert model.pretrained_cfg['tag'] == 'digits_1e'
    with torch.no_grad():
        assert torch.equal(model(_images()), source_model(_images()))
    tagged = publish.main([run['checkpoint'], '--no-push', '--local-dir', str(tmp_path / 'tagged'), '--tag', 'mine'])
    assert tagged['config']['pretrained_cfg']['tag'] == 'mine'


def test_pushing_still_needs_a_repo_id(run, tmp_path):
    apis = []
    with pytest.raises(UsageError, match='pushing to the Hub needs --repo-id ORG/NAME.*--no-push --local-dir DIR'):
        publish.main([run['checkpoint'], '--local-dir', str(tmp_path / 'out'), '--token', 'hf_fake'],
                     api_factory=_factory(apis))
    assert apis == [] and not (tmp_path / 'out').exists()
    assert publish.default_tag(None, 'cct_7_3x1_htm', {'dataset': 'torch/cifar100', 'epochs': 300}) == 'cifar100_300e'


def test_a_published_tag_may_not_shadow_a_registered_one():
    """Both families register through models.tokenmixup_layers.tagged_cfgs: a published tag that names an
    inherited or shipped tag is refused, a new one comes after them."""
    with pytest.raises(ValueError, match='cct_2_3x2_htm_vtm.digits is already registered'):
        cct._variant_cfgs({'cct_2_3x2_htm_vtm': {'digits': dict(hf_hub_id=REPO_ID, num_classes=10)}})
    with pytest.raises(ValueError, match='vit_tiny_patch16_224_htm.augreg_in21k_ft_in1k is already registered'):
        vit_tokenmixup._variant_cfgs({'vit_tiny_patch16_224_htm': {'augreg_in21k_ft_in1k': dict(hf_hub_id=REPO_ID)}})
    cfgs = vit_tokenmixup._variant_cfgs({'vit_tiny_patch16_224_htm': {'mine': dict(hf_hub_id=REPO_ID)}})
    tags = [key for key in cfgs if key.startswith('vit_tiny_patch16_224_htm.')]
    assert tags == ['vit_tiny_patch16_224_htm.augreg_in21k_ft_in1k', 'vit_tiny_patch16_224_htm.mine']
    assert cfgs['vit_tiny_patch16_224_htm.mine']['hf_hub_id'] == REPO_ID and not cfgs[tags[1]]['url']
