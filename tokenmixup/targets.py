""" Target helpers

Hard labels (B,) become (B, C) soft targets here, so that every TokenMixup module works on one
representation. Label values are checked without a device-to-host copy: on the CPU they are checked
directly; on an accelerator an out-of-range label yields a row that does not sum to 1, which the
check folded into `horizontal_mix`'s single host copy rejects.
"""
import torch

__all__ = ['one_hot_target', 'as_soft_target']


def one_hot_target(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot (optionally label-smoothed) targets from integer class labels.

    Args:
        labels: (B,) integer class indices in [0, num_classes).
        num_classes: C, number of classes (>= 1).
        smoothing: label smoothing in [0, 1): the true class gets 1 - smoothing + smoothing / C,
            every other class smoothing / C (timm's convention).

    Returns:
        (B, C) float32 targets on labels' device.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f'labels must be a torch.Tensor, got {type(labels).__name__}')
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'labels must be a (B,) integer tensor, got shape {tuple(labels.shape)} dtype {labels.dtype}')
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f'num_classes must be an int >= 1, got {num_classes!r}')
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise ValueError(f'smoothing must be a number in [0, 1), got {smoothing!r}')
    if labels.device.type == 'cpu' and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f'labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}')
    classes = torch.arange(num_classes, device=labels.device)
    hit = labels.unsqueeze(-1) == classes  # compare instead of scatter: a bad label cannot crash a kernel
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    return torch.where(hit, on_value, off_value).to(torch.float32)


def as_soft_target(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Accept hard labels (B,) or soft targets (B, C) and return soft targets (B, C).

    Soft targets are returned as they are (their shape is checked); hard labels are one-hot encoded
    with `smoothing`.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
    if target.ndim == 1 and not target.is_floating_point():
        return one_hot_target(target, num_classes, smoothing)
    if target.ndim == 2 and target.is_floating_point():
        if target.shape[1] != num_classes:
            raise ValueError(f'target has {target.shape[1]} classes, model has {num_classes}')
        return target
    raise ValueError(
        f'target must be (B,) integer labels or (B, {num_classes}) float soft targets, '
        f'got shape {tuple(target.shape)} dtype {target.dtype}')
