"""The image study's CNN baseline (REFERENCE I.4), Flax conventions: bias-free convs, LeCun init."""

from __future__ import annotations

import torch
from torch import nn

from hrm.models.init import lecun_normal_
from hrm.models.registry import CNNConfig, Shape


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, in_channels: int, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for width in cfg.widths:
            for _ in range(cfg.convs_per_stage):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False),   # Flax "SAME" padding
                           nn.BatchNorm2d(width, eps=cfg.bn_eps, momentum=cfg.bn_momentum),
                           nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, classes, bias=False)

    def init_weights(self, generator: torch.Generator) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                lecun_normal_(m.weight, generator)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))       # global average pool: (B, C)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)                     # (B, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build(cfg: CNNConfig, data: Shape) -> CNN:
    assert data.image_shape is not None, "a CNN needs Shape.image_shape"
    return CNN(cfg, data.image_shape[0], data.classes)
