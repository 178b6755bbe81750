""" The output of a TokenMixup model called with targets """
from typing import Dict, NamedTuple

import torch

__all__ = ['TokenMixupOutput']


class TokenMixupOutput(NamedTuple):
    """What `model(x, target)` returns.

    logits: (B, num_classes) predictions.
    target: (B, num_classes) float targets to train against, mixed where HTM mixed; unchanged (but
        one-hot encoded if hard labels were given) in eval mode.
    aux_loss: scalar tensor to add to the training loss (the weighted ScoreNet losses; zero when
        there is none).
    stats: dict of scalar tensors for logging (never synchronised by the model).
    """
    logits: torch.Tensor
    target: torch.Tensor
    aux_loss: torch.Tensor
    stats: Dict[str, torch.Tensor]
