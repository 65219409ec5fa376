"""What each input code of the encode stage costs against feeding the events directly.

The shipped model (``recordings/model.npz``: HOTS feature events -> 10 IF neurons) and its
decoder as config.toml runs them (rule count, k = 64) on ``N_SAMPLES`` N-MNIST training samples
(the same number per class): the denoise and hots stages once, then their feature events either
straight into the snn stage, or through an encode stage per code (docs/snn.md, "Input codes").
Per code: input spikes per sample into the network, accuracy of the decisions, the share taken
early (before the segment's end), and the median decision time: into the code (from the first
time the network may see input: the sample's first event when fed directly, the sample's last
event for a code) and from the sample's first event.

``.venv/bin/python -m bench.input_codes`` prints one table row per code (about 2 minutes).
"""

from __future__ import annotations

import pathlib

import numpy as np

from bench.common import RECORDINGS
from pipeline.core.stage import Stage, run_chain
from pipeline.learn.features import FeatureSpec, labelled_files, replay_packets
from pipeline.nodes.encode import EncodeParams, EncodeStage
from pipeline.nodes.snn import DecoderParams, DecoderStage, SnnParams, SnnStage

MODEL = pathlib.Path(__file__).resolve().parent.parent / "recordings" / "model.npz"
N_SAMPLES = 200
K = 64  # the decoder's lead, as config.toml sets it
CODES = {
    "rate, 50 ms at up to 1 kHz": {"code": "rate", "window_us": 50_000, "max_rate_hz": 1000.0},
    "rate, 20 ms at up to 1 kHz": {"code": "rate", "window_us": 20_000, "max_rate_hz": 1000.0},
    "ttfs_linear, 50 ms": {"code": "ttfs_linear", "window_us": 50_000},
    "ttfs_log, tau 10 ms, 50 ms": {"code": "ttfs_log", "window_us": 50_000, "tau_us": 10_000.0},
    "rank_order, 10 us apart": {"code": "rank_order", "step_us": 10},
}


def feature_packets(n_samples: int):
    """The hots stage's packets of ``n_samples`` training samples (equal share per class)."""
    files = labelled_files(RECORDINGS / "nmnist" / "Train")
    labels = sorted({f.label for f in files})
    per_class = n_samples // len(labels)
    chosen = [f for label in labels for f in [g for g in files if g.label == label][:per_class]]
    spec = FeatureSpec()
    return run_chain(replay_packets(chosen, spec.packet_us), spec.stages(str(MODEL)))


def score(packets, stages) -> dict:
    """Input spikes, accuracy, early share and decision times of ``packets`` through ``stages``
    (ending in the snn stage and the decoder)."""
    snn_in = []

    class Count(Stage):  # a pass-through stage counting the network's input
        def process(self, packet):
            snn_in.append(len(packet.records))
            return [packet]

    decisions = [d for p in run_chain(packets, [*stages[:-2], Count("count"), *stages[-2:]])
                 for d in p.records]
    return {"spikes": sum(snn_in), "decisions": decisions}


def main() -> None:
    packets = feature_packets(N_SAMPLES)
    first, last = {}, {}
    for packet in packets:
        segment, header = packet.header.segment, packet.header
        first.setdefault(segment.id, header.t_first)
        if len(packet.records):
            last[segment.id] = int(packet.records["t"][-1])
    rows = {"events fed directly": []}
    rows.update({name: [EncodeStage("encode", EncodeParams(model=str(MODEL), **params))]
                 for name, params in CODES.items()})
    print(f"{N_SAMPLES} samples; code | input spikes/sample | accuracy | early | "
          f"median decision time into the code, from the sample's first event (ms)")
    for name, encode in rows.items():
        stages = [*encode, SnnStage("snn", SnnParams(model=str(MODEL))),
                  DecoderStage("decoder", DecoderParams(model=str(MODEL), rule="count", k=K))]
        result = score(packets, stages)
        decisions = result["decisions"]
        right = np.mean([d["class_name"] == d["label"] for d in decisions])
        early = np.mean([d["rule"] == "count" for d in decisions])
        start = [first[d["segment"]] if not encode else last[d["segment"]] for d in decisions]
        into = np.median([d["t"] - s for d, s in zip(decisions, start)]) / 1000
        total = np.median([d["t"] - first[d["segment"]] for d in decisions]) / 1000
        print(f"| {name} | {result['spikes'] / len(decisions):.0f} | {right:.3f} | {early:.2f} | "
              f"{into:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
