"""Rebuild the continuous test recording of this folder from the bundled N-MNIST samples.

    .venv/bin/python recordings/live/build.py

writes ``nmnist_stream.aedat4`` (34 x 34 px, AEDAT 4.0) and ``nmnist_stream.json`` next to this
file: the 20 samples of ``recordings/nmnist`` in the order of ``sensors.continuous.interleave``
(seed 0: neighbours differ in label), laid back to back with 300 ms of silence between them, no
noise, no segment markers. The JSON holds the ground truth, one object per sample shown:
``onset_us`` and ``end_us`` (stream time of its first and last event, us), ``label`` and
``source`` (the sample's file under recordings/nmnist).
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)  # run as a script from anywhere

from sensors.continuous import concatenate, interleave  # noqa: E402
from sensors.replay import dataset_files  # noqa: E402
from sensors.writers import write_aedat4  # noqa: E402

GAP_US = 300_000


def build(folder: str, out: str, gap_us: int = GAP_US, seed: int = 0) -> dict:
    """Write the stream of ``folder``'s samples to ``out`` (.aedat4) and its ground truth to the
    same path with suffix .json; returns the ground truth."""
    events, shown, width, height = concatenate(interleave(dataset_files(folder), seed), gap_us)
    write_aedat4(out, [events], width, height)
    truth = {"width": width, "height": height, "gap_us": gap_us, "events": len(events),
             "objects": [{"onset_us": item.onset_us, "end_us": item.end_us, "label": item.label,
                          "events": item.events,
                          "source": os.path.relpath(item.path, folder).replace(os.sep, "/")}
                         for item in shown]}
    with open(os.path.splitext(out)[0] + ".json", "w") as handle:
        json.dump(truth, handle, indent=1)
        handle.write("\n")
    return truth


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "nmnist_stream.aedat4")
    done = build(os.path.join(ROOT, "recordings", "nmnist"), out)
    print(f"{done['events']} events, {len(done['objects'])} objects, {done['width']}x"
          f"{done['height']} -> {out}")
