"""How well calibration-region sensitivity maps reproduce multi-coil k-space: the floor of the SSDU loss for one-image models.

Usage: python benchmarks/ssdu_maps.py FOLDER [--center-fraction 0.08]
For each fully sampled multi-coil file, maps come from the centre lines (as
:func:`irecon.training.selfsup.sensitivity_maps` makes them from Θ); the best single image for them,
sum_c conj(S_c) z_c, is taken back to coil k-space, and the normalised L1+L2 k-space loss against
the measured coil k-space is printed (0 for a model that outputs coil images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from irecon.data.datasets import load_volume
from irecon.data.masks import MaskSpec
from irecon.losses import normalised_kspace_loss
from irecon.physics import fft2c, ifft2c
from irecon.training.selfsup import sensitivity_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--center-fraction", type=float, default=0.08)
    args = parser.parse_args()
    for path in sorted(args.folder.glob("*.h5")):
        full = load_volume(path, MaskSpec("random", (args.center_fraction,), (1,))).kspace  # every line
        width = full.shape[-1]
        centre = round(width * args.center_fraction)
        calibration = torch.zeros(1, 1, 1, width)
        calibration[..., width // 2 - centre // 2 : width // 2 - centre // 2 + centre] = 1
        maps = sensitivity_maps(full * calibration, calibration.expand(full.shape[0], 1, 1, width))
        image = (maps.conj() * ifft2c(full)).sum(dim=1, keepdim=True)
        loss = float(normalised_kspace_loss(fft2c(maps * image), full))
        print(
            f"{path.name}: {full.shape[1]} coils, {centre} calibration lines of {width}: maps k-space loss {loss:.4f}"
        )


if __name__ == "__main__":
    main()
