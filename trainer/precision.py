"""Half precision for inference on a GPU, only where it answers as fp32 does. No Django here."""

from __future__ import annotations

import torch

__all__ = ["FP16_TOLERANCE", "forward", "half_is_close"]

# The largest probability difference from fp32 that fp16 scoring and serving may make.
FP16_TOLERANCE = 1e-3


def forward(model, xb: torch.Tensor, *, half: bool = False) -> torch.Tensor:
    """fp32 logits of ``model`` on ``xb``; computed under fp16 autocast when ``half``."""
    if half:
        with torch.autocast(device_type=xb.device.type, dtype=torch.float16):
            return model(xb).float()
    return model(xb).float()


def half_is_close(
    model, xb: torch.Tensor, *, tolerance: float = FP16_TOLERANCE, gpu_only: bool = True
) -> bool:
    """Whether this batch's probabilities under fp16 stay within ``tolerance`` of fp32's.

    Off a GPU it is False: CPUs gain nothing from fp16 (``gpu_only=False`` is for tests).
    """
    if gpu_only and xb.device.type != "cuda":
        return False
    with torch.inference_mode():
        full = torch.softmax(forward(model, xb), dim=1)
        half = torch.softmax(forward(model, xb, half=True), dim=1)
    return bool((full - half).abs().max() <= tolerance)
