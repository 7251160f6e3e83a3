"""Pretrain the toy segmenter's encoder (the toy world's ImageNet) into models/toy-encoder.

    python scripts/pretrain_toy_encoder.py [--out models/toy-encoder] [--n-images 20000] [--steps 1500]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from a2m_utils.toy import encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=encoder.ENCODER_DEFAULT)
    p.add_argument("--n-images", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=1500)
    a = p.parse_args()
    torch.set_num_threads(1)  # one thread: the same weights on any machine
    state, record = encoder.pretrain(a.n_images, a.steps)
    print(encoder.save(state, record, a.out), record)


if __name__ == "__main__":
    main()
