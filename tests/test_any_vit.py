"""TokenMixup in more of timm's ViT family: the registered table and any other timm ViT (docs/design.md §5.2).

The registered variants are generated from `models.vit_tokenmixup.VARIANT_BASES`; `create_tokenmixup_vit`
(registered as `tokenmixup_vit`) builds TokenMixup into any timm name that timm builds as a
`VisionTransformer` of pre-norm `Block`s with fused-qkv `Attention`, and refuses the rest at construction.
Architecture and refusal checks run on the meta device; eval parity runs on small configurations (fewer
blocks, 32x32 images) and at full size only in the slow tests. timm's tiny `test_vit` (CLS token) and
`test_vit2` (one register, no CLS token) stand for "any other ViT".
"""
import csv
import functools
import inspect
import json
import re
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from timm.models.vision_transformer import Block, ResPostBlock

import models
import train
import validate
from hub import publish
from models import ANY_VIT_ARCHITECTURE, create_tokenmixup_vit, tokenmixup_model_args
from models.tokenmixup_layers import check_attention_supported
from models.vit_tokenmixup import RECIPES, VARIANT_BASES, read_timm_build
from models.presets import PRESETS
from tokenmixup.settings import SETTING_NAMES
from tokenmixup_tools.checkpoints import create_model_from_config, describe_model, load_training_checkpoint

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SUFFIXES = ('_htm', '_vtm', '_htm_vtm')
BASES = {  # timm base -> its registered default tag (timm's default, except the paper's ViT-B/16 start)
    'vit_tiny_patch16_224': 'augreg_in21k_ft_in1k',
    'vit_small_patch16_224': 'augreg_in21k_ft_in1k',
    'vit_base_patch16_224': 'orig_in21k_ft_in1k',
    'vit_base_patch16_384': 'augreg_in21k_ft_in1k',
    'vit_large_patch16_224': 'augreg_in21k_ft_in1k',
    'vit_medium_patch16_reg4_gap_256': 'sbb_in12k_ft_in1k',
    'deit_tiny_patch16_224': 'fb_in1k',
    'deit_small_patch16_224': 'fb_in1k',
    'deit_base_patch16_224': 'fb_in1k',
    'deit3_small_patch16_224': 'fb_in1k',
    'deit3_base_patch16_224': 'fb_in1k',
}
NO_CLS_BASES = ('vit_medium_patch16_reg4_gap_256',)
NEW_BASES = [base for base in BASES if base not in
             ('vit_tiny_patch16_224', 'vit_small_patch16_224', 'vit_base_patch16_224')]
SMALL = dict(depth=2, img_size=32, num_classes=10)  # the architecture, with fewer blocks and 4 patches
ANY = dict(img_size=32, patch_size=8, num_classes=10)  # timm's test_vit / test_vit2 at 16 patches


def _meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def _images(batch_size: int, size: int = 32) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size)


def _trunk_matches(model: torch.nn.Module, state_dict: dict) -> None:
    """`model` holds exactly `state_dict` plus fresh ScoreNet weights."""
    loaded = model.state_dict()
    assert {key for key in loaded if 'scorenet' not in key} == set(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value), key


# ---------------------------------------------------------------------------------------------
# the registered table

def test_the_table_registers_three_variants_of_each_base_and_no_timm_name():
    names = timm.list_models(module='vit_tokenmixup', exclude_filters=[ANY_VIT_ARCHITECTURE])
    assert sorted(names) == sorted(base + suffix for base in BASES for suffix in SUFFIXES)
    assert [base.name for base in VARIANT_BASES] == list(BASES)
    for base in BASES:  # timm's own names stay timm's
        assert timm.models.model_entrypoint(base).__module__.startswith('timm.models.')


@pytest.mark.parametrize('base', BASES)
def test_default_tag_is_the_bases_timm_weights(base):
    """The default tag of every variant is BASES' tag, timm's own default tag for every new base."""
    for suffix in SUFFIXES:
        cfg = timm.models.get_pretrained_cfg(base + suffix)
        assert cfg.tag == BASES[base]
        assert cfg.hf_hub_id == f'timm/{base}.{BASES[base]}'
    if base in NEW_BASES:
        assert timm.models.get_pretrained_cfg(base).tag == BASES[base]


@pytest.mark.parametrize('base', BASES)
def test_variant_is_exactly_the_bases_architecture(base):
    """The timm entrypoint's architecture arguments: the same parameters, buffers, module types (Block ->
    TokenMixupBlock) and prefix tokens as timm's base, plus ScoreNet parameters in the _htm variants."""
    reference = _meta(base)
    reference_types = [type(m).__name__.replace('Block', 'TokenMixupBlock')
                       for name, m in reference.named_modules() if name]
    params = {key: p.shape for key, p in reference.named_parameters()}
    for suffix in SUFFIXES:
        model = _meta(base + suffix)
        variant = {key: p.shape for key, p in model.named_parameters() if 'scorenet' not in key}
        assert variant == params
        assert bool(len(variant) < len(list(model.named_parameters()))) == ('_htm' in suffix)
        assert [key for key, _ in model.named_buffers()] == [key for key, _ in reference.named_buffers()]
        types = [type(m).__name__ for name, m in model.named_modules()
                 if name and name.split('.')[0] not in ('htm', 'vtm')]
        assert types == reference_types
        for attribute in ('num_prefix_tokens', 'has_class_token', 'no_embed_class', 'global_pool', 'num_reg_tokens'):
            assert getattr(model, attribute) == getattr(reference, attribute), attribute
        assert len(model.blocks) >= 12  # the presets' blocks 3 and 4 are never clamped


@pytest.mark.parametrize('base', BASES)
def test_variant_defaults_are_the_recipe_of_its_token_layout(base):
    """CLS models: the paper's vit_imagenet_* presets ('cls' saliency and ScoreNet); models without a CLS
    token: vit_imagenet_*_gap ('mean' saliency, average-pooled ScoreNet)."""
    assert set(RECIPES['gap'].values()) <= set(PRESETS)
    for suffix in SUFFIXES:
        model = _meta(base + suffix)
        config = model.tokenmixup_cfg
        assert model.pretrained_cfg.get('architecture') == base + suffix
        assert (config.htm_layers, config.vtm_layers) == {'_htm': ((3,), ()), '_vtm': ((), (3,)),
                                                          '_htm_vtm': ((3,), (4,))}[suffix]
        assert config.saliency == ('mean' if base in NO_CLS_BASES else 'cls')
        if '_htm' in suffix:
            assert config.scorenet_pool == ('avg' if base in NO_CLS_BASES else 'cls')
            assert (config.tau, config.rho, config.scorenet_lambda, config.scorenet_detach) == (1.0, 0.01, 1.0, True)


@pytest.mark.parametrize('setting', ['saliency', 'scorenet_pool'])
def test_a_register_model_without_cls_token_refuses_cls(setting):
    """has_class_token decides, not num_prefix_tokens: 4 registers are no CLS token."""
    with pytest.raises(ValueError, match=rf"{setting}='cls' reads the CLS token"):
        _meta('vit_medium_patch16_reg4_gap_256_htm_vtm', **{setting: 'cls'})


def test_timms_own_names_do_not_take_tokenmixup_settings():
    """timm's names are never re-registered: timm's class rejects the setting (README: what to call instead)."""
    with pytest.raises(TypeError, match='htm_layers'):
        _meta('deit_small_patch16_224', htm_layers=(3,))


@functools.lru_cache(maxsize=1)
def _small_base(base: str):
    torch.manual_seed(1)
    model = timm.create_model(base, **SMALL).eval()
    x = _images(2)
    with torch.no_grad():
        return model.state_dict(), x, model(x)


@pytest.mark.parametrize('name', [base + suffix for base in BASES for suffix in ('_htm_vtm',)])
def test_eval_logits_equal_timms_base_bit_for_bit(name):
    """With the base's weights (2 blocks, 32x32) the eval logits are timm's, bit for bit."""
    state_dict, x, logits = _small_base(name[:-len('_htm_vtm')])
    model = timm.create_model(name, **SMALL).eval()
    result = model.load_state_dict(state_dict, strict=False)
    assert result.unexpected_keys == [] and all('scorenet' in key for key in result.missing_keys)
    with torch.no_grad():
        assert torch.equal(model(x), logits)


@pytest.mark.slow
@pytest.mark.parametrize('name', [base + '_htm' for base in NEW_BASES])
def test_full_size_eval_logits_equal_timms_base_bit_for_bit(name):
    torch.manual_seed(1)
    base = timm.create_model(name[:-len('_htm')]).eval()
    model = timm.create_model(name).eval()
    model.load_state_dict(base.state_dict(), strict=False)
    x = torch.randn(1, *base.pretrained_cfg['input_size'])
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


@pytest.mark.parametrize('base', ['deit3_small_patch16_224', 'vit_medium_patch16_reg4_gap_256'])
def test_timm_weights_load_strictly_with_a_fresh_scorenet(base, tmp_path):
    """Through the base's own checkpoint filter (DeiT: layer scale adaptation); only the ScoreNet is new."""
    state_dict, x, logits = _small_base(base)
    path = tmp_path / f'{base}.pth'
    torch.save(state_dict, path)
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model(base + '_htm', pretrained=True, pretrained_cfg_overlay=overlay, **SMALL)
    _trunk_matches(model, state_dict)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), logits)


def test_register_model_trains_with_htm_and_vtm():
    """No CLS token: mean saliency, average-pooled ScoreNet; targets stay distributions."""
    model = timm.create_model('vit_medium_patch16_reg4_gap_256_htm_vtm', **SMALL, tau=1e9, rho=0.0,
                              htm_layers=(1,), vtm_layers=(1,)).train()
    out = model(_images(4), torch.arange(4))
    assert out.logits.shape == (4, 10) and out.stats[1].easy_samples == 4
    torch.testing.assert_close(out.target.sum(-1), torch.ones(4))
    (out.logits.mean() + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# any other timm ViT: what is refused, and the message

@pytest.mark.parametrize('name, expected', [
    ('swin_tiny_patch4_window7_224', 'SwinTransformer, which has windowed attention'),
    ('vit_base_patch16_rope_reg1_gap_256', 'Eva, which has its own attention with rotary'),
    ('vit_relpos_base_patch16_224', 'VisionTransformerRelPos, which has relative position biases'),
    ('vit_base_patch16_rpn_224', 'its blocks are ResPostBlock (post-norm'),
    ('vit_small_patch16_18x2_224', 'its blocks are ParallelThingsBlock'),
    ('vit_dwee_patch16_reg1_gap_256', "its attention is attn_layer='diff'"),
    ('deit_tiny_distilled_patch16_224', 'VisionTransformerDistilled, which has two heads'),
    ('resnet18', 'ResNet, not VisionTransformer'),
    ('no_such_model', 'not a registered timm model name'),
    ('vit_tiny_patch16_224_htm', 'a model of this zoo already'),
])
def test_unsupported_models_are_refused_at_construction_saying_what_they_have(name, expected):
    with torch.device('meta'), pytest.raises(ValueError, match=re.escape(expected)) as error:
        create_tokenmixup_vit(name, htm_layers=(1,))
    if 'not supported' in str(error.value):
        assert "timm's VisionTransformer whose blocks are all timm's pre-norm Block" in str(error.value)


def test_the_registered_name_needs_base_model():
    with pytest.raises(ValueError, match='base_model'):
        timm.create_model(ANY_VIT_ARCHITECTURE, htm_layers=(1,))


def test_the_block_check_looks_at_the_block_class():
    """A post-norm ResPostBlock (or timm's plain Block) has a fused-qkv Attention but not the block
    protocol: refused by index and class; a TokenMixupBlock passes."""
    with torch.device('meta'):
        blocks = [models.TokenMixupBlock(64, 2), ResPostBlock(64, 2), Block(64, 2)]
    check_attention_supported(blocks[:1])
    with pytest.raises(ValueError, match='block 1 is a ResPostBlock, which lacks forward_with_memory'):
        check_attention_supported(blocks)
    with pytest.raises(ValueError, match='block 1 is a Block, which lacks'):
        check_attention_supported([blocks[0], blocks[2]])


def test_reading_the_architecture_builds_nothing_and_restores_timm():
    build = read_timm_build('deit3_small_patch16_224')
    assert build.model_cls is timm.models.vision_transformer.VisionTransformer
    assert build.model_kwargs == dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, no_embed_class=True,
                                      init_values=1e-6)
    assert timm.models.deit.build_model_with_cfg is timm.models.build_model_with_cfg
    assert timm.models.vision_transformer.build_model_with_cfg is timm.models.build_model_with_cfg


# ---------------------------------------------------------------------------------------------
# any other timm ViT: what it builds

def test_every_setting_is_a_keyword_of_create_tokenmixup_vit():
    parameters = inspect.signature(create_tokenmixup_vit).parameters
    assert {'model_name', 'pretrained', 'tokenmixup_preset', *SETTING_NAMES} <= set(parameters)
    model = create_tokenmixup_vit('test_vit', **ANY, htm_layers=(1, 4), vtm_layers=(2,), tau=0.5, kappa=5,
                                  saliency='cls', scorenet_pool='avg', mixing='manifold')
    config = model.tokenmixup_cfg
    assert (config.htm_layers, config.vtm_layers, config.tau, config.kappa) == ((1, 4), (2,), 0.5, 5)
    assert (config.saliency, config.scorenet_pool, config.mixing) == ('cls', 'avg', 'manifold')
    assert model.pretrained_cfg['classifier'] == ('head', 'htm.1.scorenet.head', 'htm.4.scorenet.head')


@pytest.mark.parametrize('base', ['test_vit', 'test_vit2'])
def test_any_vit_eval_logits_equal_timms_bit_for_bit(base):
    torch.manual_seed(0)
    reference = timm.create_model(base, **ANY).eval()
    for kwargs in (dict(htm_layers=(2,)), dict(vtm_layers=(3,)), dict(htm_layers=(1,), vtm_layers=(4,))):
        model = create_tokenmixup_vit(base, **ANY, **kwargs).eval()
        model.load_state_dict(reference.state_dict(), strict=False)
        x = _images(2)
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))


def test_the_registered_name_builds_the_same_model():
    a = create_tokenmixup_vit('test_vit', **ANY, htm_layers=(2,))
    b = timm.create_model(ANY_VIT_ARCHITECTURE, base_model='test_vit', **ANY, htm_layers=(2,))
    assert type(a) is type(b) and a.tokenmixup_cfg == b.tokenmixup_cfg
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.pretrained_cfg == b.pretrained_cfg


def test_without_cls_token_the_declared_defaults_work_and_cls_is_refused():
    """Declared defaults are 'mean' saliency and SeqPool; the _gap presets are the paper's recipe without
    a CLS token; the CLS presets are refused by name."""
    config = create_tokenmixup_vit('test_vit2', **ANY, htm_layers=(2,)).tokenmixup_cfg
    assert (config.saliency, config.scorenet_pool) == ('mean', 'attn')
    config = create_tokenmixup_vit('test_vit2', **ANY, tokenmixup_preset='vit_imagenet_htm_vtm_gap').tokenmixup_cfg
    assert (config.htm_layers, config.vtm_layers, config.saliency, config.scorenet_pool) == ((3,), (4,), 'mean', 'avg')
    with pytest.raises(ValueError, match="saliency='cls'"):
        create_tokenmixup_vit('test_vit2', **ANY, tokenmixup_preset='vit_imagenet_vtm')


def test_prefix_tokens_are_never_mixed_and_never_enter_the_memory():
    """test_vit2 has one register token and no CLS token: HTM keeps it, the VTM memory never holds it."""
    torch.manual_seed(0)
    model = create_tokenmixup_vit('test_vit2', **ANY, htm_layers=(1,), vtm_layers=(3,), tau=1e9, rho=0.0,
                                  kappa=16).train()
    seen, memories = {}, []
    model.htm['1'].register_forward_hook(
        lambda module, args, output: seen.update(before=args[0].detach(), after=output.x.detach()))
    memory_tokens = model.vtm.memory_tokens

    def record(x, attn):
        tokens = memory_tokens(x, attn)
        memories.append((x.detach(), tokens.detach()))
        return tokens

    model.vtm.memory_tokens = record
    out = model(_images(4), torch.arange(4))
    assert out.stats[1].mixed_samples > 0
    assert torch.equal(seen['after'][:, :1], seen['before'][:, :1])  # the register token, unmixed
    assert not torch.equal(seen['after'][:, 1:], seen['before'][:, 1:])
    assert len(memories) == 3
    for x, tokens in memories:  # kappa = T: every patch token, and only patch tokens
        assert tokens.shape == (4, 16, 64)
        patches = x[:, 1:].sort(dim=1).values
        torch.testing.assert_close(tokens.sort(dim=1).values, patches, rtol=0, atol=0)


@pytest.fixture(scope='module')
def test_vit_file(tmp_path_factory):
    torch.manual_seed(3)
    state_dict = timm.create_model('test_vit', **ANY).state_dict()
    path = tmp_path_factory.mktemp('test_vit') / 'test_vit.pth'
    torch.save(state_dict, path)
    return path, state_dict


def test_pretrained_loads_the_bases_timm_weights_with_a_fresh_scorenet(test_vit_file):
    path, state_dict = test_vit_file
    overlay = dict(file=str(path), num_classes=10)
    model = create_tokenmixup_vit('test_vit', pretrained=True, pretrained_cfg_overlay=overlay, **ANY, htm_layers=(2,))
    _trunk_matches(model, state_dict)


def test_pretrained_with_other_classes_drops_head_and_scorenet_head(test_vit_file):
    path, state_dict = test_vit_file
    overlay = dict(file=str(path), num_classes=10)
    model = create_tokenmixup_vit('test_vit', pretrained=True, pretrained_cfg_overlay=overlay,
                                  **dict(ANY, num_classes=5), htm_layers=(2,))
    assert model.head.weight.shape == model.htm['2'].scorenet.head.weight.shape == (5, 64)
    assert torch.equal(model.state_dict()['blocks.5.mlp.fc2.weight'], state_dict['blocks.5.mlp.fc2.weight'])


def test_pretrained_missing_a_trunk_weight_fails(test_vit_file, tmp_path):
    _, state_dict = test_vit_file
    broken = {key: value for key, value in state_dict.items() if key != 'blocks.0.attn.qkv.weight'}
    torch.save(broken, tmp_path / 'broken.pth')
    with pytest.raises(RuntimeError, match='blocks.0.attn.qkv.weight'):
        overlay = dict(file=str(tmp_path / 'broken.pth'), num_classes=10)
        create_tokenmixup_vit('test_vit', pretrained=True, pretrained_cfg_overlay=overlay, **ANY, htm_layers=(2,))


# ---------------------------------------------------------------------------------------------
# the record, train.py, validate.py, hub.publish, local-dir:

@pytest.mark.parametrize('name, kwargs, expected', [
    ('test_vit', dict(htm_layers=(2,)), ANY_VIT_ARCHITECTURE),
    ('test_vit', dict(tokenmixup_preset='vit_imagenet_htm'), ANY_VIT_ARCHITECTURE),
    ('test_vit', dict(img_size=32), 'test_vit'),  # no TokenMixup argument: timm's own model
    ('vit_tiny_patch16_224_htm', dict(htm_layers=(2,)), 'vit_tiny_patch16_224_htm'),
    ('cct_2_3x2', dict(htm_layers=(1,)), 'cct_2_3x2'),
    ('local-dir:somewhere', dict(htm_layers=(1,)), 'local-dir:somewhere'),
])
def test_tokenmixup_model_args_routes_only_other_timm_names(name, kwargs, expected):
    architecture, routed = tokenmixup_model_args(name, kwargs)
    assert architecture == expected
    assert routed == (dict(kwargs, base_model=name) if expected == ANY_VIT_ARCHITECTURE else kwargs)


def test_the_record_names_tokenmixup_vit_and_rebuilds_the_model():
    model = create_tokenmixup_vit('test_vit', **ANY, htm_layers=(2,))
    record = describe_model(model, 'test_vit', dict(ANY, htm_layers=(2,)))
    assert record['architecture'] == ANY_VIT_ARCHITECTURE and record['model_kwargs']['base_model'] == 'test_vit'
    rebuilt = create_model_from_config(record)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.tokenmixup_cfg == model.tokenmixup_cfg


QUICK = ['--batch-size', '64', '--workers', '0', '--img-size', '16', '--warmup-epochs', '0', '--log-interval', '1000',
         '--no-progress', '--epochs', '1', '--lr', '2e-3', '--experiment', 'run']


@pytest.fixture(scope='module')
def any_vit_run(tmp_path_factory):
    """train.py --model test_vit --htm-layers 2 --vtm-layers 3: one epoch on the embedded digits."""
    output = tmp_path_factory.mktemp('any_vit')
    result = train.main([*QUICK, '--output', str(output), '--model', 'test_vit', '--model-kwargs', 'patch_size=4',
                         '--htm-layers', '2', '--vtm-layers', '3', '--tau', '3.0'])
    run_dir = Path(result['output_dir'])
    with open(run_dir / 'summary.csv') as f:
        summary = list(csv.DictReader(f))[-1]
    return run_dir / 'last.pth.tar', summary


def test_train_records_tokenmixup_vit_with_its_base(any_vit_run):
    checkpoint, summary = any_vit_run
    config = load_training_checkpoint(str(checkpoint))['model_config']
    assert config['architecture'] == ANY_VIT_ARCHITECTURE
    kwargs = config['model_kwargs']
    assert (kwargs['base_model'], kwargs['patch_size'], kwargs['img_size']) == ('test_vit', 4, 16)
    assert (kwargs['htm_layers'], kwargs['vtm_layers'], kwargs['tau']) == ([2], [3], 3.0)
    assert 'train_htm2_mixed_samples' in summary


def test_validate_reproduces_the_runs_top1(any_vit_run):
    checkpoint, summary = any_vit_run
    row, = validate.main(['--checkpoint', str(checkpoint)])
    assert abs(row['top1'] - round(float(summary['eval_top1']), 4)) < 1e-6


def _hub_cache(monkeypatch, cache: Path, repo_id: str, folder: Path) -> None:
    """`folder` laid out as huggingface_hub's (offline) cache holds `repo_id` at `main`, the cache in use."""
    commit = 'c0ffee' + '0' * 34
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    (repo / 'snapshots' / commit).mkdir(parents=True)
    for name in publish.EXPORTED_FILES:
        (repo / 'snapshots' / commit / name).write_bytes((folder / name).read_bytes())
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))


def test_publish_then_local_dir_and_hf_hub_rebuild_the_exact_model(any_vit_run, tmp_path, monkeypatch):
    checkpoint, _ = any_vit_run
    folder = tmp_path / 'export'
    publish.main([str(checkpoint), '--no-push', '--local-dir', str(folder)])
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == ANY_VIT_ARCHITECTURE and config['model_args']['base_model'] == 'test_vit'
    assert config['pretrained_cfg']['classifier'] == ['head', 'htm.2.scorenet.head']
    card = (folder / 'README.md').read_text()
    assert f'`{ANY_VIT_ARCHITECTURE}` (base `test_vit`)' in card  # the card names the timm model it extends
    record = load_training_checkpoint(str(checkpoint))
    source = create_model_from_config(record['model_config'])
    source.load_state_dict(record['state_dict'])
    x = _images(4, 16)
    _hub_cache(monkeypatch, tmp_path / 'hf-cache', 'zoo-test/test_vit_tokenmixup', folder)
    for name in (f'local-dir:{folder}', 'hf-hub:zoo-test/test_vit_tokenmixup'):
        loaded = timm.create_model(name, pretrained=True).eval()
        assert isinstance(loaded, models.VisionTransformerTokenMixup)
        assert loaded.tokenmixup_cfg == source.tokenmixup_cfg
        with torch.no_grad():
            assert torch.equal(loaded(x), source.eval()(x)), name


def test_a_timm_model_built_in_another_thread_during_a_read_builds(monkeypatch):
    """read_timm_build swaps timm's builder for the length of one entrypoint call; a timm model built in another
    thread meanwhile (here: exactly then) still builds, through timm's builder."""
    import threading
    from timm.models import _registry
    reading, other_done, errors = threading.Event(), threading.Event(), []
    original = _registry._model_entrypoints['test_vit']

    def waiting_entrypoint(*args, **kwargs):  # the read is under way: the builder is swapped now
        reading.set()
        assert other_done.wait(60), 'the other thread did not finish'
        return original(*args, **kwargs)
    monkeypatch.setitem(_registry._model_entrypoints, 'test_vit', waiting_entrypoint)

    def build_other():
        try:
            assert reading.wait(60)
            built.append(timm.create_model('resnet18', num_classes=3))
        except Exception as e:  # collected, so the main thread reports it
            errors.append(f'{type(e).__name__}: {e}')
        finally:
            other_done.set()
    built = []
    thread = threading.Thread(target=build_other)
    thread.start()
    build = read_timm_build('test_vit', img_size=32)
    thread.join()
    assert errors == [] and type(built[0]).__name__ == 'ResNet' and built[0].num_classes == 3
    assert build.model_cls is timm.models.VisionTransformer and build.model_kwargs['img_size'] == 32
