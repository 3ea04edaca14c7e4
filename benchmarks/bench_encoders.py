"""Embedding throughput of the audio encoders on this CPU.

Embeds ``--clips`` synthetic 10 s slider clips with each encoder whose weights are on
this machine (plus ``random-cnn``), with the embedding cache off, and prints clips/s
including audio loading and resampling. Usage::

    SOUNDWATCH_EFFICIENTAT_WEIGHTS=../shared/models/efficientat-mn04-as \\
        python benchmarks/bench_encoders.py [--clips 100] [--encoders a,b]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from soundwatch.data.datasets import discover
from soundwatch.encoders.embed import embed_clips
from soundwatch.encoders.registry import ENCODERS
from soundwatch.synth import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100, help="clips to embed")
    parser.add_argument("--encoders", default="", help="comma-separated (default: local)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="soundwatch-enc-"))
    generate_dataset(
        data,
        machine="slider",
        n_ids=1,
        n_train_per_id=args.clips,
        n_test_normal_per_id=0,
        n_test_anomaly_per_id=0,
        progress=False,
    )
    clips = discover(data, "slider", "train")
    os.environ["SOUNDWATCH_CACHE"] = "off"
    encoders = ENCODERS.available()
    names = [n.strip() for n in args.encoders.split(",") if n.strip()] or [
        name
        for name, cls in encoders.items()
        if not cls.requires_weights or cls.local_weights() is not None
    ]
    print(f"{len(clips)} clips of 10 s; torch threads {torch.get_num_threads()}")
    print(f"{'encoder':<20} {'dim':>5} {'clips/s':>8} {'ms/clip':>8}")
    for name in names:
        encoder = ENCODERS.create(name, batch_size=args.batch_size).load()
        embed_clips(clips[:2], encoder, use_cache=False)  # warm-up: first-call overheads
        start = time.perf_counter()
        vectors, _ = embed_clips(clips, encoder, use_cache=False)
        seconds = time.perf_counter() - start
        print(
            f"{name:<20} {vectors.shape[1]:>5} {len(clips) / seconds:8.1f} "
            f"{1000 * seconds / len(clips):8.1f}"
        )


if __name__ == "__main__":
    main()
