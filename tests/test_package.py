"""The installed packages are this repository's, and what they import is declared (docs/design.md §1)."""
import ast
import configparser
import importlib
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Dict, Set, Tuple

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
    """The method knows nothing of specific models (docs/design.md §1, import rules)."""
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


# the code the package and its tools run (not tests, benchmarks or the CI scripts)
_LIBRARY_CODE = ('tokenmixup', 'models', 'tokenmixup_tools', 'hub', 'train.py', 'validate.py', 'visualize.py')
_OUR_MODULES = {'tokenmixup', 'models', 'tokenmixup_tools', 'hub'}
# imported only where installed: the `viz` extra's matplotlib, and wandb for `train.py --log-wandb` (as in timm)
_OPTIONAL = {'matplotlib': 'viz', 'wandb': None}


def _requirements(extras: bool = True) -> Dict[str, Tuple[str, str]]:
    """setup.cfg's install_requires (and extras): distribution name (normalised) -> (operator, version)."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / 'setup.cfg')
    lines = config['options']['install_requires'].split()
    if extras:
        for extra in config['options.extras_require'].values():
            lines += extra.split()
    parsed = {}
    for line in lines:
        match = re.fullmatch(r'([A-Za-z0-9_.-]+)(>=|==)([0-9][0-9A-Za-z.]*)', line)
        assert match, f'setup.cfg: {line!r} is not name>=floor'
        parsed[_normalise(match[1])] = (match[2], match[3])
    return parsed


def _normalise(distribution: str) -> str:
    return re.sub(r'[-_.]+', '-', distribution).lower()


def _imported_top_level_modules() -> Set[str]:
    files = []
    for entry in _LIBRARY_CODE:
        path = REPO_ROOT / entry
        files += sorted(path.rglob('*.py')) if path.is_dir() else [path]
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split('.')[0])
    return modules - set(sys.stdlib_module_names) - _OUR_MODULES


def test_every_third_party_import_is_a_declared_requirement():
    """What the code imports is what setup.cfg installs (numpy, pyyaml and pillow included)."""
    required, optional = set(_requirements(extras=False)), set(_requirements())
    distributions = packages_distributions()
    modules = _imported_top_level_modules()
    assert {'torch', 'timm', 'numpy', 'yaml', 'PIL', 'scipy', 'safetensors', 'huggingface_hub'} <= modules
    for module in modules:
        names = {_normalise(name) for name in distributions.get(module, [module])}
        if module in _OPTIONAL:
            extra = _OPTIONAL[module]
            assert extra is None or names & optional, f'{module} is imported but the {extra} extra lacks it'
        else:
            assert names & required, f'{module} is imported but not in setup.cfg install_requires'


def test_each_requirement_has_a_floor_and_a_tested_version_above_it():
    """Every requirement is `name>=floor`; .ci/constraints.txt pins each at or above its floor."""
    tested = {}
    for line in (REPO_ROOT / '.ci' / 'constraints.txt').read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            name, version = line.split('==')
            tested[_normalise(name)] = version
    for name, (operator, floor) in _requirements().items():
        assert operator == '>=', f'setup.cfg pins {name} with {operator}: declare a floor (>=)'
        assert name in tested, f'{name} has no tested version in .ci/constraints.txt'
        assert _version_key(tested[name]) >= _version_key(floor), f'{name}: tested {tested[name]} < floor {floor}'


def _version_key(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r'\d+', version))


def test_ci_runs_exactly_the_readme_test_command():
    """`.ci/run` and the README's Tests section hold one command, the same one."""
    readme = (REPO_ROOT / 'README.md').read_text()
    section = readme.split('## Tests', 1)[1].split('```bash\n', 1)[1].split('\n```', 1)[0]
    ci_lines = [line for line in (REPO_ROOT / '.ci' / 'run').read_text().splitlines()
                if line and not line.startswith(('#', 'set ', 'cd '))]
    assert ci_lines == [section]
