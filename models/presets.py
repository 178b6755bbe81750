""" The paper's TokenMixup recipes, as presets of the zoo's model families

Each `Preset` is a recipe of the paper (CCT on CIFAR-100 and CIFAR-10, Table 1; ViT on ImageNet, Table 2) for a
reference model, which `tokenmixup.resolve_settings` adapts to the model built (docs/design.md §2.4). A model takes
one by name (`tokenmixup_preset='cct_cifar100_htm'`); the registered variants use them as their defaults
(docs/design.md §5.3). A new model family adds its recipes here: `tokenmixup/` knows none.
"""
from typing import Dict, Optional

from tokenmixup import Preset

__all__ = ['PRESETS', 'get_preset']


# The paper's recipes. The declared defaults are the CIFAR-100 CCT recipe's HTM hyper-parameters, so
# its presets name only where the blocks go; the others state what differs.
_CCT_CIFAR10_HTM = dict(tau=1.0, rho=0.003)
_VIT_IMAGENET_SALIENCY = dict(saliency='cls')
_VIT_IMAGENET_HTM = dict(
    _VIT_IMAGENET_SALIENCY, tau=1.0, rho=0.01, scorenet_lambda=1.0, scorenet_pool='cls', scorenet_detach=True)
_VIT_GAP_SALIENCY = dict(saliency='mean')
_VIT_GAP = dict(_VIT_GAP_SALIENCY, scorenet_pool='avg')

PRESETS: Dict[str, Preset] = {preset.name: preset for preset in (
    Preset('cct_cifar100_htm', 'CCT-7/3x1 on CIFAR-100 (paper Table 1): HTM in front of block 2; tau 2.0 for '
           '100 classes, scaled by ln C', dict(htm_layers=(2,)), tau_classes=100),
    Preset('cct_cifar100_vtm', 'CCT-7/3x1 on CIFAR-100: VTM at block 2, kappa 80 per 256 tokens',
           dict(vtm_layers=(2,), kappa=80), kappa_per_tokens=256),
    Preset('cct_cifar100_htm_vtm', 'CCT-7/3x1 on CIFAR-100: HTM in front of block 3, VTM at block 2, kappa 3; '
           'tau 2.0 for 100 classes, scaled by ln C', dict(htm_layers=(3,), vtm_layers=(2,)), tau_classes=100),
    Preset('cct_cifar10_htm', 'CCT-7/3x1 on CIFAR-10: HTM in front of block 2, tau 1.0 for 10 classes (scaled by '
           'ln C), rho 0.003', dict(_CCT_CIFAR10_HTM, htm_layers=(2,)), tau_classes=10),
    Preset('cct_cifar10_vtm', 'CCT-7/3x1 on CIFAR-10: VTM at block 1, kappa 5 per 256 tokens',
           dict(vtm_layers=(1,), kappa=5), kappa_per_tokens=256),
    Preset('cct_cifar10_htm_vtm', 'CCT-7/3x1 on CIFAR-10: HTM in front of block 2, VTM at block 3, rho 0.004; '
           'tau 1.0 for 10 classes (scaled by ln C)',
           dict(_CCT_CIFAR10_HTM, htm_layers=(2,), vtm_layers=(3,), rho=0.004), tau_classes=10),
    Preset('vit_imagenet_htm', 'ViT-B/16 on ImageNet (paper Table 2): HTM in front of block 3, CLS saliency, '
           'detached CLS ScoreNet', dict(_VIT_IMAGENET_HTM, htm_layers=(3,))),
    Preset('vit_imagenet_vtm', 'ViT-B/16 on ImageNet: VTM at block 3, kappa 3, CLS saliency',
           dict(_VIT_IMAGENET_SALIENCY, vtm_layers=(3,))),
    Preset('vit_imagenet_htm_vtm', 'ViT-B/16 on ImageNet: HTM in front of block 3, VTM at block 4',
           dict(_VIT_IMAGENET_HTM, htm_layers=(3,), vtm_layers=(4,))),
    # the ImageNet ViT recipes for ViTs without a CLS token (global-average-pooled, register tokens): the
    # saliency is the mean over queries (Eq. 3) and the ScoreNet average-pools, as the model's own head does
    Preset('vit_imagenet_htm_gap', 'vit_imagenet_htm for ViTs without a CLS token: mean saliency, average-pooled '
           'ScoreNet', dict(_VIT_IMAGENET_HTM, **_VIT_GAP, htm_layers=(3,))),
    Preset('vit_imagenet_vtm_gap', 'vit_imagenet_vtm for ViTs without a CLS token: mean saliency',
           dict(_VIT_GAP_SALIENCY, vtm_layers=(3,))),
    Preset('vit_imagenet_htm_vtm_gap', 'vit_imagenet_htm_vtm for ViTs without a CLS token: mean saliency, '
           'average-pooled ScoreNet', dict(_VIT_IMAGENET_HTM, **_VIT_GAP, htm_layers=(3,), vtm_layers=(4,))),
)}


def get_preset(name: Optional[str]) -> Optional[Preset]:
    """The preset called `name` (None for None); a ValueError names the presets for any other name."""
    if name is None:
        return None
    if name not in PRESETS:
        raise ValueError(f'tokenmixup_preset must be one of {tuple(PRESETS)} or None, got {name!r}')
    return PRESETS[name]
