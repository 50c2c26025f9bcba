"""fp16 inference only where it answers as fp32 does: checked on CPU with autocast."""

import torch
from torch import nn

from trainer.precision import FP16_TOLERANCE, forward, half_is_close


def linear(weight, bias) -> nn.Module:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer.eval()


def test_half_is_used_where_its_probabilities_match_fp32():
    model = linear([[0.3, -0.2], [0.1, 0.4]], [0.0, 0.1])
    xb = torch.randn(16, 2)

    assert half_is_close(model, xb, gpu_only=False)
    full = torch.softmax(forward(model, xb), 1)
    half = torch.softmax(forward(model, xb, half=True), 1)
    assert (full - half).abs().max() <= FP16_TOLERANCE


def test_half_is_refused_where_fp16_rounding_changes_the_answer():
    # Logits near 10,000 differ by less than fp16's spacing there (8): fp16 sees a tie.
    model = linear([[0.0, 0.0], [0.5, 0.0]], [10_000.0, 10_000.0])
    xb = torch.ones(4, 2)

    assert not half_is_close(model, xb, gpu_only=False)


def test_the_cpu_always_scores_in_fp32():
    model = linear([[0.3, -0.2], [0.1, 0.4]], [0.0, 0.1])

    assert not half_is_close(model, torch.randn(4, 2))
