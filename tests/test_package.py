"""The installed packages are this repository's (docs/design.md §1)."""
import importlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_import_models_resolves_to_this_repository():
    """`models` is a common folder name: the one imported must be ours."""
    models = importlib.import_module('models')
    assert Path(models.__file__).resolve().parent == REPO_ROOT / 'models'


def test_import_tokenmixup_resolves_to_this_repository():
    tokenmixup = importlib.import_module('tokenmixup')
    assert Path(tokenmixup.__file__).resolve().parent == REPO_ROOT / 'tokenmixup'


def test_tokenmixup_exports_every_public_name():
    tokenmixup = importlib.import_module('tokenmixup')
    for name in tokenmixup.__all__:
        assert getattr(tokenmixup, name) is not None, name
    for name in ('attention_saliency', 'saliency_gain', 'assign_partners', 'horizontal_mix',
                 'select_salient_tokens', 'HorizontalMix', 'ScoreNet', 'HorizontalTokenMixup',
                 'TokenMixupOutput', 'vertical_attention', 'gradient_saliency', 'random_saliency'):
        assert name in tokenmixup.__all__, name


def test_tokenmixup_does_not_import_models_or_timm_model_code():
    """The method knows nothing of specific models (STYLE.md)."""
    for path in (REPO_ROOT / 'tokenmixup').glob('*.py'):
        imports = [line.split() for line in path.read_text().splitlines()
                   if line.startswith(('import ', 'from '))]
        imported = {words[1].split('.')[0] for words in imports}
        assert not imported & {'models', 'timm'}, f'{path.name} imports {imported & {"models", "timm"}}'


def test_public_callables_have_docstrings():
    tokenmixup = importlib.import_module('tokenmixup')
    for name in tokenmixup.__all__:
        obj = getattr(tokenmixup, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f'{name} has no docstring'
