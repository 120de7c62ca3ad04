"""D_detail: DECA's DCGAN-style detail generator, latent (jaw|exp|detail = 181) -> 1x256x256 UV displacement.

Layer indices match the checkpoints exactly (emoca.md 1.4, emoca-keys.txt): ``l1.0`` Linear(latent, 128*8*8),
then ``conv_blocks``: 0 BN(128, eps 1e-5); five stages [Upsample x2 bilinear, Conv3x3, BN(eps=0.8), LeakyReLU 0.2]
at indices (1,2,3,4) (5,6,7,8) (9,10,11,12) (13,14,15,16) (17,18,19,20) with channels 128->128->64->64->32->16;
21 Conv3x3 16->1; 22 Tanh. The output is scaled by ``out_scale = 0.01``. The eps of 0.8 is a quirk of the
original (0.8 passed positionally as eps); it is kept because the released weights were trained with it.
"""

from __future__ import annotations

import torch
from torch import nn

INIT_SIZE = 8
CHANNELS = (128, 128, 64, 64, 32, 16)


class DetailGenerator(nn.Module):
    """(B, latent_dim) -> (B, 1, 256, 256) displacement along the normal (FLAME units)."""

    def __init__(self, latent_dim: int = 181, out_channels: int = 1, out_scale: float = 0.01):
        super().__init__()
        self.latent_dim = latent_dim
        self.out_scale = out_scale
        self.l1 = nn.Sequential(nn.Linear(latent_dim, CHANNELS[0] * INIT_SIZE**2))
        blocks: list[nn.Module] = [nn.BatchNorm2d(CHANNELS[0])]
        for cin, cout in zip(CHANNELS[:-1], CHANNELS[1:]):
            # align_corners left at torch's default (False) [derived: the original passes no flag]
            blocks += [
                nn.Upsample(scale_factor=2, mode="bilinear"),
                nn.Conv2d(cin, cout, 3, stride=1, padding=1),
                nn.BatchNorm2d(cout, 0.8),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        blocks += [nn.Conv2d(CHANNELS[-1], out_channels, 3, stride=1, padding=1), nn.Tanh()]
        self.conv_blocks = nn.Sequential(*blocks)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.l1(latent).view(latent.shape[0], CHANNELS[0], INIT_SIZE, INIT_SIZE)
        return self.conv_blocks(x) * self.out_scale
