"""Shared by the sink tests: a small real model, an N-MNIST subset folder, the default graph."""

from __future__ import annotations

import os
import json
import re

import numpy as np

from pipeline.core.model import SnnModel
from tests.conftest import AEDAT4_SAMPLE, NMNIST_TRAIN, ROOT


def nmnist_subset(folder, per_class: int):
    """A dataset folder of symlinks to the first ``per_class`` samples of each class; returns
    (folder, number of samples)."""
    total = 0
    for class_folder in sorted(NMNIST_TRAIN.iterdir()):
        target = folder / class_folder.name.strip()
        target.mkdir(parents=True)
        for sample in sorted(class_folder.glob("*.bin"))[:per_class]:
            os.symlink(sample, target / sample.name)
            total += 1
    return folder, total


def random_model(path, classes) -> str:
    """A 2312 -> len(classes) IF network with seeded positive weights: it spikes on every sample."""
    rng = np.random.default_rng(7)
    weights = rng.uniform(0.0, 0.02, (2312, len(classes))).astype(np.float32)
    SnnModel(weights=(weights,), thresholds=(1.0,), biases=(0.0,), taus_us=(np.inf,),
             resets=("subtract",), refractory_us=(0,), classes=tuple(classes)).save(path)
    return str(path)


def demo_config(folder, **graph) -> str:
    """config.toml (the default graph) copied into ``folder`` as config.toml: its bundled paths
    made absolute, its JSON lines written to ``folder``/demo.jsonl and each ``[graph]`` key of
    ``graph`` (name, runner, cores, ...) set to the value given (a string or an int; added when
    config.toml does not set it); returns the copy's path."""
    text = (ROOT / "config.toml").read_text()
    head, rest = text.split("[source.", 1)
    for key, value in graph.items():
        line = f'{key} = {json.dumps(value)}'
        head, found = re.subn(rf"(?m)^{key} = .*$", line, head)
        if not found:
            head = head.replace("[graph]\n", f"[graph]\n{line}\n", 1)
    text = (head + "[source." + rest).replace('"recordings/', f'"{ROOT / "recordings"}/')
    text, found = re.subn(r'(?m)^path = "out/demo.jsonl"', f'path = "{folder / "demo.jsonl"}"', text)
    assert found == 1, "config.toml writes no out/demo.jsonl"
    path = folder / "config.toml"
    path.write_text(text)
    return str(path)


def failing_config(path, runner: str, name: str = "evpipe") -> str:
    """A graph named ``name`` whose npy sink cannot write its file (its path is a folder): it
    fails at the end of the stream and the graph ends with an error. Returns the config's path."""
    folder = path.parent / "npy_path_is_a_folder"
    folder.mkdir(exist_ok=True)
    path.write_text(f"""
[graph]
name = "{name}"
runner = "{runner}"

[source.replay]
type = "replay"
path = "{AEDAT4_SAMPLE}"

[sink.record]
type = "npy"
path = "{folder}"

[[link]]
from = "replay"
to = "record"
""")
    return str(path)
