""" TokenMixup settings, each declared once

`TokenMixupConfig` declares every TokenMixup setting once, as one field of a frozen dataclass whose metadata
holds its kind, allowed values, scope and a one-line help; `SETTINGS` is read from those fields. Everything
else is derived from them: the one validator `check_settings` (used by the model
constructors, `HorizontalTokenMixup`, `VerticalTokenMixup`, `ScoreNet` and the functional API), the
keyword arguments of the zoo's model constructors, train.py's TokenMixup flags, the checkpoint record
and the model card. Adding a setting means adding a field to `TokenMixupConfig` and the code that uses it.

A `Preset` is a named recipe: setting values for a reference model (the model families define theirs, e.g. the
paper's in `models/presets.py`); `resolve_settings` adapts a preset to the model being built and lays the
caller's explicit settings over it (declared default < preset < explicit). See docs/design.md §2.4.
"""
import inspect
import math
import numbers
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'Setting', 'setting', 'SETTINGS', 'SETTING_NAMES', 'SETTING_DEFAULTS', 'TokenMixupConfig', 'ModelContext', 'Preset',
    'check_settings', 'resolve_settings', 'settings_in_scope', 'settings_signature',
    'SALIENCY_REDUCTIONS', 'SCORENET_POOLS', 'MASK_REFERENCES', 'PAIRINGS', 'TOKEN_SELECTIONS', 'LABEL_MIXINGS',
    'MIXINGS',
]

SALIENCY_REDUCTIONS = ('mean', 'cls')
SCORENET_POOLS = ('attn', 'avg', 'cls')
MASK_REFERENCES = ('own', 'first')
PAIRINGS = ('hungarian', 'random')
TOKEN_SELECTIONS = ('saliency', 'random')
LABEL_MIXINGS = ('saliency', 'count')
MIXINGS = ('token', 'manifold')

KINDS = ('layers', 'count', 'nonnegative', 'positive', 'bool', 'choice')
SCOPES = ('model', 'htm', 'vtm', 'htm+vtm')


@dataclass(frozen=True)
class Setting:
    """The declaration of one TokenMixup setting.

    name: keyword argument of the models and modules (train.py flag `--name-with-dashes`).
    kind: 'layers' (distinct block indices, at least `minimum`), 'count' (an int >= 1), 'nonnegative'
        (a finite number >= 0), 'positive' (a finite number > 0), 'bool' or 'choice' (one of `choices`).
    default: the value when neither a preset nor the caller gives one.
    help: one line for `--help` and the model card.
    scope: who reads it: 'model' (the block loop), 'htm', 'vtm' or 'htm+vtm'.
    choices: the allowed values of a 'choice'.
    minimum: the first allowed block index of a 'layers' setting.
    """
    name: str
    kind: str
    default: Any
    help: str
    scope: str
    choices: Tuple[str, ...] = ()
    minimum: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'Setting {self.name}: kind must be one of {KINDS}, got {self.kind!r}')
        if self.scope not in SCOPES:
            raise ValueError(f'Setting {self.name}: scope must be one of {SCOPES}, got {self.scope!r}')
        if (self.kind == 'choice') != bool(self.choices):
            raise ValueError(f'Setting {self.name}: choices are given exactly for kind "choice"')
        _check_value(self, self.default)

    @property
    def annotation(self) -> Any:
        return {'layers': Tuple[int, ...], 'count': int, 'nonnegative': float, 'positive': float,
                'bool': bool, 'choice': str}[self.kind]


@dataclass(frozen=True)
class ModelContext:
    """What the settings are checked against: the transformer they configure.

    depth: number of blocks (None: unknown, block indices are not range-checked); num_tokens: N, all
    tokens entering a block (None: unknown, kappa is not checked against T); num_prefix_tokens: P, the
    leading tokens (CLS, distillation, registers) that are never mixed; has_class_token: whether the
    first prefix token is a CLS token ('cls' saliency and pooling read it); num_classes: C, the classes
    the model is built for (None: unknown; presets then keep their tau).
    """
    depth: Optional[int] = None
    num_tokens: Optional[int] = None
    num_prefix_tokens: int = 0
    has_class_token: bool = False
    num_classes: Optional[int] = None

    @classmethod
    def from_prefix(cls, num_prefix_tokens: int, has_class_token: Optional[bool] = None) -> 'ModelContext':
        """What a module in front of a block knows: P, and whether token 0 is a CLS token (default: P >= 1)."""
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f'num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}')
        if has_class_token is None:
            has_class_token = num_prefix_tokens >= 1
        if has_class_token and num_prefix_tokens < 1:
            raise ValueError('has_class_token=True needs num_prefix_tokens >= 1 (the CLS token is a prefix token)')
        return cls(num_prefix_tokens=num_prefix_tokens, has_class_token=bool(has_class_token))

    @property
    def num_mixable_tokens(self) -> Optional[int]:
        """T = N - P, or None when N is unknown."""
        return None if self.num_tokens is None else self.num_tokens - self.num_prefix_tokens


# ---------------------------------------------------------------------------------------------
# the validator

def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_value(setting: Setting, value: Any) -> Any:
    """`value` as plain Python data of the setting's kind; ValueError naming the setting otherwise."""
    name, kind = setting.name, setting.kind
    if kind == 'layers':
        if isinstance(value, np.ndarray) and value.ndim == 1:
            value = value.tolist()
        if not isinstance(value, (tuple, list, range)):
            raise ValueError(f'{name} must be a tuple of block indices such as (2,), or () to disable, got {value!r}')
        for index in value:
            if not _is_integer(index) or index < setting.minimum:
                raise ValueError(f'{name} must hold block indices >= {setting.minimum}, got {index!r}')
        indices = tuple(int(index) for index in value)
        repeated = sorted({index for index in indices if indices.count(index) > 1})
        if repeated:
            raise ValueError(f'{name} repeats block index {repeated[0]}: each block may appear once')
        return indices
    if kind == 'count':
        if not _is_integer(value) or value < 1:
            raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        return int(value)
    if kind in ('nonnegative', 'positive'):
        low_ok = (lambda number: number > 0) if kind == 'positive' else (lambda number: number >= 0)
        if not _is_number(value) or not math.isfinite(value) or not low_ok(value):
            bound = '> 0' if kind == 'positive' else '>= 0'
            raise ValueError(f'{name} must be a finite number {bound}, got {value!r}')
        return float(value)
    if kind == 'bool':
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f'{name} must be a bool, got {value!r}')
        return bool(value)
    if not isinstance(value, str) or value not in setting.choices:
        raise ValueError(f'{name} must be one of {setting.choices}, got {value!r}')
    return value


# ---------------------------------------------------------------------------------------------
# the declaration

def setting(
        kind: str,
        default: Any,
        help: str,
        scope: str,
        choices: Tuple[str, ...] = (),
        minimum: int = 0,
) -> Any:
    """A field of `TokenMixupConfig` that declares one setting: its default, and in its metadata the rest of its
    `Setting` (kind, help, scope, choices, minimum)."""
    return field(default=default, metadata=MappingProxyType(
        dict(kind=kind, help=help, scope=scope, choices=choices, minimum=minimum)))


@dataclass(frozen=True)
class TokenMixupConfig:
    """The TokenMixup settings of a model, and the declaration of every setting: one field each, whose metadata
    holds its kind, help, scope and choices (`SETTINGS` is read from these fields). Values are checked and made
    plain Python data on construction (tuples for block lists); the checks that need the model are
    `check_settings(values, context)`'s."""
    htm_layers: Tuple[int, ...] = setting(
        'layers', (), 'blocks with Horizontal TokenMixup in front of them (0-based); empty: HTM off', scope='model')
    vtm_layers: Tuple[int, ...] = setting(
        'layers', (), 'blocks that run as Vertical TokenMixup blocks (0-based, >= 1); empty: VTM off', scope='model',
        minimum=1)
    tau: float = setting(
        'nonnegative', 2.0, 'HTM difficulty threshold: a sample is easy when its ScoreNet cross-entropy < tau',
        scope='htm')
    rho: float = setting(
        'nonnegative', 0.005, 'HTM minimum per-token saliency gain for a token to be replaced (Eq. 6, 9)', scope='htm')
    kappa: int = setting(
        'count', 3, 'VTM: salient tokens each earlier block adds to the memory (at most the token count)', scope='vtm')
    scorenet_lambda: float = setting(
        'nonnegative', 0.001, 'weight of the ScoreNet loss in the training loss', scope='htm')
    scorenet_pool: str = setting(
        'choice', 'attn', 'ScoreNet pooling: attn (SeqPool), avg, or cls (needs a CLS token)', scope='htm',
        choices=SCORENET_POOLS)
    scorenet_detach: bool = setting(
        'bool', False, 'the ScoreNet reads detached tokens, so its loss does not shape the trunk', scope='htm')
    saliency: str = setting(
        'choice', 'mean', 'attention reduction into token saliency: mean over queries (Eq. 3) or the CLS row (needs a '
        'CLS token)', scope='htm+vtm', choices=SALIENCY_REDUCTIONS)
    vtm_detach: bool = setting('bool', False, 'no gradient into the VTM memory', scope='vtm')
    mask_reference: str = setting(
        'choice', 'own', "HTM replacement mask against each sample's own saliency (Eq. 9) or the first easy sample's "
        '(the released code)', scope='htm', choices=MASK_REFERENCES)
    difficulty_gating: bool = setting(
        'bool', True, 'HTM mixes only easy samples (Table 4 ablates it: every sample is mixed, the ScoreNet is still '
        'trained)', scope='htm')
    pairing: str = setting(
        'choice', 'hungarian', 'HTM partners by Hungarian matching on the saliency gain (Eq. 7), or random distinct '
        'partners (Table 4 ablation)', scope='htm', choices=PAIRINGS)
    token_selection: str = setting(
        'choice', 'saliency', 'HTM replaces the tokens the saliency mask selects (Eq. 9), or as many at random '
        'positions (Table 4 ablation)', scope='htm', choices=TOKEN_SELECTIONS)
    label_mixing: str = setting(
        'choice', 'saliency', 'HTM label weights from the saliency of kept and taken tokens (Eq. 11), or from their '
        'counts (Table 4 ablation)', scope='htm', choices=LABEL_MIXINGS)
    mixing: str = setting(
        'choice', 'token', 'at the HTM block: TokenMixup, or manifold mixup of whole token sets of all samples '
        '(Table 5 comparison)', scope='htm', choices=MIXINGS)
    manifold_alpha: float = setting(
        'positive', 2.0, "manifold mixup's Beta(alpha, alpha) interpolation weight", scope='htm')

    def __post_init__(self) -> None:
        for name, value in check_settings({f.name: getattr(self, f.name) for f in fields(self)}).items():
            object.__setattr__(self, name, value)

    def scope(self, scope: str) -> Dict[str, Any]:
        """The values of the settings that a module of `scope` ('htm' or 'vtm') takes."""
        return {declared.name: getattr(self, declared.name) for declared in settings_in_scope(scope)}

    def in_effect(self) -> Dict[str, Any]:
        """The settings that change what the model computes: the layers, and the settings of HTM and of VTM only
        where they have layers (a tau on a model without HTM is read by nothing)."""
        scopes = ['model']
        if self.htm_layers:
            scopes.append('htm')
        if self.vtm_layers:
            scopes.append('vtm')
        read = {declared.name for scope in scopes for declared in settings_in_scope(scope)}
        return {name: getattr(self, name) for name in SETTING_NAMES if name in read}


SETTINGS: Tuple[Setting, ...] = tuple(
    Setting(declared.name, default=declared.default, **declared.metadata) for declared in fields(TokenMixupConfig))

SETTING_NAMES: Tuple[str, ...] = tuple(setting.name for setting in SETTINGS)
SETTING_DEFAULTS: Mapping[str, Any] = MappingProxyType({setting.name: setting.default for setting in SETTINGS})
_BY_NAME: Dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


# ---------------------------------------------------------------------------------------------
# checking settings, alone or against a model

def _check_in_context(values: Mapping[str, Any], context: ModelContext) -> None:
    """The checks that depend on the model: block range, kappa against T, a CLS token for 'cls'."""
    depth = context.depth
    if depth is not None:
        for name in ('htm_layers', 'vtm_layers'):
            for index in values.get(name, ()):
                if index >= depth:
                    raise ValueError(
                        f'{name} must hold block indices in [{_BY_NAME[name].minimum}, {depth - 1}] for a '
                        f'{depth}-block model, got {index!r}')
    kappa = values.get('kappa')
    if kappa is not None and context.num_tokens is not None and kappa > context.num_mixable_tokens:
        raise ValueError(f'kappa must be an int in [1, T] = [1, {context.num_mixable_tokens}] for this model, '
                         f'got {kappa!r}')
    if not context.has_class_token:
        for name, alternative in (('scorenet_pool', "'attn' or 'avg'"), ('saliency', "'mean'")):
            if values.get(name) == 'cls':
                raise ValueError(f"{name}='cls' reads the CLS token, and this model has none; use {alternative}")


def check_settings(
        values: Mapping[str, Any],
        context: Optional[ModelContext] = None,
        owner: str = 'TokenMixup',
        scope: Optional[str] = None,
) -> Dict[str, Any]:
    """Validate TokenMixup settings; the one check every consumer calls.

    Args:
        values: setting name -> value (any subset of `SETTINGS`). Numpy scalars and arrays of block
            indices are accepted like Python numbers and tuples.
        context: the model the settings are for; adds the checks that depend on it (block indices
            below `depth`, kappa <= T, a CLS token for 'cls' saliency and pooling).
        owner: who receives them, for the error on an unknown name.
        scope: 'htm' or 'vtm' to accept only the settings of that module (see `settings_in_scope`).

    Returns:
        The values as plain Python data (floats, ints, bools, strings, tuples of ints).

    Raises:
        TypeError for a name that is not a setting (of `scope`); ValueError naming the setting for a
        bad value.
    """
    accepted = SETTING_NAMES if scope is None else tuple(setting.name for setting in settings_in_scope(scope))
    unknown = [name for name in values if name not in accepted]
    if unknown:
        raise TypeError(f'{owner} got an unexpected keyword argument {unknown[0]!r} '
                        f'(its TokenMixup settings: {", ".join(accepted)})')
    checked = {name: _check_value(_BY_NAME[name], value) for name, value in values.items()}
    if context is not None:
        _check_in_context(checked, context)
    return checked


def settings_in_scope(scope: str) -> Tuple[Setting, ...]:
    """The settings a module of `scope` ('htm' or 'vtm') reads (those shared with the other included)."""
    if scope not in ('htm', 'vtm', 'model'):
        raise ValueError(f"scope must be 'htm', 'vtm' or 'model', got {scope!r}")
    return tuple(setting for setting in SETTINGS if scope in setting.scope.split('+'))


def settings_signature(
        function: Callable,
        settings: Sequence[Setting],
        defaults: Optional[Mapping[str, Any]] = None,
        base: Optional[Callable] = None,
) -> inspect.Signature:
    """The signature of `function` with its `**kwargs` spelled out as keyword-only parameters.

    The parameters are `function`'s own, then those of `base` (a parent `__init__` that `**kwargs`
    also feeds) that it does not already list, then one per setting, with `defaults` overriding the
    declared defaults. Assign it to `function.__signature__` so that `inspect.signature` and `help()`
    show what the function accepts.
    """
    own = inspect.signature(function)
    parameters = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in parameters}
    if base is not None:
        for p in list(inspect.signature(base).parameters.values())[1:]:  # skip the parent's self
            if p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                parameters.append(p.replace(kind=p.KEYWORD_ONLY))
                names.add(p.name)
    defaults = defaults or {}
    parameters += [
        inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, annotation=setting.annotation,
                          default=defaults.get(setting.name, setting.default))
        for setting in settings if setting.name not in names]
    return own.replace(parameters=parameters)


# ---------------------------------------------------------------------------------------------
# the settings of one model

@dataclass(frozen=True)
class Preset:
    """A named recipe: setting values for a reference model, adapted to the model built.

    name: its name (the value of a model's `tokenmixup_preset`).
    description: where the values come from.
    values: setting name -> value for the reference model (7-block CCT at 256 tokens, 12-block ViT);
        settings it leaves out keep their declared default.
    kappa_per_tokens: when set, `values['kappa']` is given per this many non-prefix tokens and scales
        with the model's token count: round(kappa * T / kappa_per_tokens), at least 1.
    tau_classes: when set, tau (the preset's, else the declared default) is the threshold for this many
        classes and scales with the log of the model's class count C: tau * ln C / ln tau_classes, the
        same fraction of the chance-level cross-entropy ln C (docs/design.md §2.4).
    """
    name: str
    description: str
    values: Mapping[str, Any]
    kappa_per_tokens: Optional[int] = None
    tau_classes: Optional[int] = None

    def __post_init__(self) -> None:
        check_settings(self.values, owner=f'preset {self.name!r}')
        if self.kappa_per_tokens is not None and 'kappa' not in self.values:
            raise ValueError(f'preset {self.name!r} scales kappa but sets none')
        if self.tau_classes is not None and self.tau_classes < 2:
            raise ValueError(f'preset {self.name!r}: tau_classes must be >= 2, got {self.tau_classes}')

    def layers(self, depth: int) -> Dict[str, Tuple[int, ...]]:
        """The preset's block lists for a `depth`-block model: block index b becomes min(b, depth - 1)."""
        return {setting.name: tuple(min(index, depth - 1) for index in self.values[setting.name])
                for setting in SETTINGS if setting.kind == 'layers' and setting.name in self.values}

    def adapted(self, context: ModelContext) -> Dict[str, Any]:
        """The values for `context`: block lists clamped to its depth (`layers`); kappa may scale with T and
        tau with ln C."""
        if context.depth is None or context.num_tokens is None:
            raise ValueError('a preset is adapted to a model of known depth and num_tokens')
        values = dict(self.values, **self.layers(context.depth))
        if self.kappa_per_tokens is not None:
            values['kappa'] = max(1, round(values['kappa'] * context.num_mixable_tokens / self.kappa_per_tokens))
        if self.tau_classes is not None and context.num_classes is not None and context.num_classes >= 2 \
                and context.num_classes != self.tau_classes and values.get('htm_layers', ()):
            tau = values.get('tau', SETTING_DEFAULTS['tau'])
            values['tau'] = round(tau * math.log(context.num_classes) / math.log(self.tau_classes), 4)
        return values


def resolve_settings(
        values: Mapping[str, Any],
        context: ModelContext,
        preset: Optional[Preset] = None,
        owner: str = 'TokenMixup',
) -> 'TokenMixupConfig':
    """The settings of one model: declared defaults, then the preset adapted to it, then `values`.

    Args:
        values: the settings given explicitly (any subset of `SETTINGS`).
        context: the model they are for.
        preset: a recipe, or None.
        owner: who receives them, for error messages.

    Returns:
        A `TokenMixupConfig`, every value checked against `context`.
    """
    merged = dict(preset.adapted(context)) if preset is not None else {}
    merged.update(values)
    return TokenMixupConfig(**check_settings(merged, context, owner=owner))
