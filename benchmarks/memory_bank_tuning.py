"""Tuning harness for `memory-bank`: mean AUC over machine IDs of parameter settings on
the seed-1 and seed-2 tuning sets, full and 10-shot, slider and fan.

Log-mels are read once per set (through the on-disk feature cache) and each setting
fits one bank per machine ID on all of that ID's training clips: unlike
``soundwatch evaluate`` it holds out no clips for the threshold, so its AUCs differ from
``evaluate``'s by up to about 0.01 (the chosen settings were confirmed with
``evaluate``). Never point it at the reported (seed-0) sets.

Usage::

    python benchmarks/memory_bank_tuning.py '[{}, {"mel_pool": 2}]'
    BASE='{"n_fft": 2048}' python benchmarks/memory_bank_tuning.py '[{"n_fft": 2048}]'

``BASE`` holds the log-mel parameters the sets are read with; each setting must use
the same ones. Set roots: ``/tmp/fs_tune{1,2}`` (100 normals per ID) and
``/tmp/fs_tune{1,2}_10`` (10 per ID), or ``TUNE_ROOT`` as the prefix.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from soundwatch.data.datasets import discover
from soundwatch.data.manifest import anomaly_kinds
from soundwatch.detectors import create

PREFIX = os.environ.get("TUNE_ROOT", "/tmp/fs_tune")
SEEDS = (1, 2)
MACHINES = ("slider", "fan")


def load(base: dict) -> dict:
    """{(seed, machine, regime): (train ids, train log-mels, test log-mels, labels,
    kinds, test ids)}; the test clips of the full and 10-shot sets are the same."""
    reader = create("memory-bank", **base)
    data = {}
    for seed in SEEDS:
        for machine in MACHINES:
            test = discover(f"{PREFIX}{seed}", machine, "test")
            labels = np.array([int(c.label == "anomaly") for c in test])
            kinds = np.array([k or "" for k in anomaly_kinds(test)])
            ids = np.array([c.machine_id for c in test])
            test_raws = reader.logmels(test)
            for regime, suffix in (("full", ""), ("10", "_10")):
                train = discover(f"{PREFIX}{seed}{suffix}", machine, "train")
                train_ids = np.array([c.machine_id for c in train])
                data[(seed, machine, regime)] = (
                    train_ids,
                    reader.logmels(train),
                    test_raws,
                    labels,
                    kinds,
                    ids,
                )
    return data


def run(params: dict, data: dict) -> dict:
    """{key: (mean AUC over IDs, {kind: mean AUC over IDs})} of one setting."""
    results = {}
    for key, (train_ids, raws, test_raws, labels, kinds, ids) in data.items():
        scores = np.empty(len(test_raws))
        for machine_id in sorted(set(ids)):
            bank = create("memory-bank", **params)
            bank._fit_bank([r for r, i in zip(raws, train_ids, strict=True) if i == machine_id])
            rows = np.flatnonzero(ids == machine_id)
            scores[rows] = bank._score_raws([test_raws[j] for j in rows])
        per_id = [roc_auc_score(labels[ids == i], scores[ids == i]) for i in sorted(set(ids))]
        per_kind = {}
        for kind in sorted(set(kinds) - {""}):
            aucs = []
            for i in sorted(set(ids)):
                rows = (ids == i) & ((labels == 0) | (kinds == kind))
                aucs.append(roc_auc_score(labels[rows], scores[rows]))
            per_kind[kind] = float(np.mean(aucs))
        results[key] = (float(np.mean(per_id)), per_kind)
    return results


def main() -> None:
    data = load(json.loads(os.environ.get("BASE", "{}")))
    for params in json.loads(sys.argv[1]):
        start = time.perf_counter()
        results = run(params, data)
        cells = " ".join(f"s{s}{m[0]}{r}={results[(s, m, r)][0]:.3f}" for s, m, r in results)
        mean = np.mean([v[0] for v in results.values()])
        print(
            f"{json.dumps(params)} | {cells} | mean={mean:.4f} | "
            f"{time.perf_counter() - start:.0f}s",
            flush=True,
        )
        for key, (_, per_kind) in results.items():
            if key[2] == "full":
                print("   ", key, " ".join(f"{k}={v:.3f}" for k, v in per_kind.items()))


if __name__ == "__main__":
    main()
