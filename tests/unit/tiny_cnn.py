"""A hand-built CNN whose class evidence is known: class 0 = red pixels, class 1 = blue pixels.

`features` (the target layer) is a stride-2 conv + ReLU with four detectors: red, blue, green and
a weak "anything bright" channel; GAP and a linear layer score the classes. `scene()` draws a red
square (class 0's object) and a blue square (class 1's) on a grey background, so every CAM method
should light up the square of the class asked for.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SIZE = 32
RED_BOX = (slice(6, 16), slice(4, 14))  # rows, cols of the red square
BLUE_BOX = (slice(18, 28), slice(16, 28))


class TinyCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 4, kernel_size=2, stride=2)
        detectors = torch.tensor(
            [
                [1.0, -1.0, -1.0],  # red
                [-1.0, -1.0, 1.0],  # blue
                [-1.0, 1.0, -1.0],  # green (absent from the scenes)
                [0.3, 0.3, 0.3],
            ]
        )  # anything bright, weakly
        with torch.no_grad():
            conv.weight.copy_(detectors[:, :, None, None].expand(-1, -1, 2, 2) / 4)
            conv.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -0.1]))
        self.features = nn.Sequential(conv, nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[40.0, -10.0, 0.0, 1.0], [-10.0, 40.0, 0.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def scene(batch: int = 1) -> tuple[Tensor, Tensor]:
    """(images (B, 3, 32, 32) in [0, 1], masks (2, 32, 32) bool: the red and the blue square)."""
    image = torch.full((3, SIZE, SIZE), 0.35)
    image[:, RED_BOX[0], RED_BOX[1]] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    image[:, BLUE_BOX[0], BLUE_BOX[1]] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[0, RED_BOX[0], RED_BOX[1]] = True
    masks[1, BLUE_BOX[0], BLUE_BOX[1]] = True
    return image.expand(batch, -1, -1, -1).clone(), masks


class SmallCnn(nn.Module):
    """A random 3-layer CNN with 24 channels at its target layer `body` and a CamNet-like dict output
    ({"logits", "features"}): cheap enough for one forward per channel in tests."""

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 24, 3, stride=2, padding=1),
            nn.BatchNorm2d(24),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(24, num_classes, 1, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            self.body[3].running_mean.uniform_(-0.5, 0.5, generator=generator)
            self.body[3].running_var.uniform_(0.5, 2.0, generator=generator)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.body(x)
        return {"logits": self.classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1), "features": features}
