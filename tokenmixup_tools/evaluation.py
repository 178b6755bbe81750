""" The evaluation pass of `train.py` and `validate.py`

One loop, so that `validate.py --checkpoint` reproduces the top-1 `train.py` wrote to summary.csv:
the model in eval mode under the given autocast, float32 logits into timm's
`ClassificationEvaluator` (cross-entropy loss, top-1 and top-5 in percent).
"""
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Dict, Iterable, Tuple

import torch
import torch.nn as nn
from timm.task import ClassificationEvaluator

__all__ = ['evaluate']

_logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
        model: nn.Module,
        loader: Iterable[Tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        amp_autocast: Callable[[], AbstractContextManager] = nullcontext,
        distributed: bool = False,
        log_interval: int = 0,
) -> Dict[str, float]:
    """Loss, top-1 and top-5 (percentages) of `model` over `loader`.

    Args:
        distributed: sum the counts over the processes of the default process group.
        log_interval: log the running metrics every this many batches (and after the last); 0: never.
    """
    model.eval()
    evaluator = ClassificationEvaluator(device=device)
    start = time.perf_counter()
    for step, (input, target) in enumerate(loader):
        input, target = input.to(device), target.to(device)
        with amp_autocast():
            output = model(input)
        evaluator.update(output.float(), target)
        if log_interval and (step % log_interval == 0 or step + 1 == len(loader)):
            running = evaluator.summary()
            rate = evaluator.num_samples / max(time.perf_counter() - start, 1e-9)
            _logger.info(f'test [{step + 1}/{len(loader)}] {rate:.1f} img/s  loss {running["loss"]:.4f}  '
                         f'top-1 {running["top1"]:.3f}  top-5 {running["top5"]:.3f}')
    return evaluator.compute(distributed=distributed)
