"""Features for training and evaluation, computed by the graph's own stage objects.

The feature chain is replay -> "denoise" -> "hots" (one HOTS layer, Lagorce et al. 2017, mode
"all": the local time surface of both polarities around each event, matched to the nearest of N
prototypes). Every feature event (t, x, y, f) becomes one input spike of the SNN at index
``((y // cell) * ceil(W / cell) + x // cell) * N + f`` (``kernels.snn_input``), so a sample's
feature vector is the count of its input spikes per index divided by their total: per-cell
histograms of prototype activations. The vector of a prefix of the sample is the same count over
the prefix, which is exactly what the SNN has integrated at that moment.

Datasets are folders of class folders (``labelled_files``); splits are deterministic:
stratified, seeded folds.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from kernels.snn_input import map_inputs, n_inputs
from pipeline.core.nodetype import ParamError
from pipeline.core.packet import Packet
from pipeline.core.stage import Stage, run_chain
from pipeline.learn.cluster import Runner, Shipped, reused
from pipeline.nodes.features import Denoise, DenoiseParams, Hots, HotsParams
from sensors.readers import FormatError
from sensors.replay import Replay, SegmentFile, dataset_files

PREFIXES = (0.15, 0.30, 0.50, 1.0)  # prefix training: fractions of each sample's feature events


@dataclass(frozen=True)
class FeatureSpec:
    """Feature parameters, saved in the model. denoise_us: background-activity window (us);
    radius (pixels), tau_us (us), n_prototypes, mode: the HOTS layer; cell: pixels per input cell
    side; packet_us: replay packet length (us); width, height: sensor size (pixels)."""

    denoise_us: int = 20_000
    radius: int = 2
    tau_us: float = 50_000.0
    n_prototypes: int = 64
    mode: str = "all"
    cell: int = 6
    packet_us: int = 1000
    width: int = 34
    height: int = 34

    def __post_init__(self):
        """ParamError (a ValueError) naming the first parameter outside its range, before any
        work: the stages' own ranges, and cell, packet_us, width and height >= 1."""
        try:
            self.stages()
        except ParamError as exc:  # named as here: denoise_us is the denoise stage's duration_us
            raise ParamError("denoise_us" if exc.key == "duration_us" else exc.key,
                             exc.message) from None
        for name in ("cell", "packet_us", "width", "height"):
            if getattr(self, name) < 1:
                raise ParamError(name, f"expected an integer >= 1, got {getattr(self, name)}")

    @property
    def n_inputs(self) -> int:
        return n_inputs(self.width, self.height, self.cell, self.n_prototypes)

    @property
    def input_map(self) -> tuple[int, int, int]:
        """The SNN inputs as a map (prototypes, cells high, cells wide): the ``in_shape`` of a
        first conv layer (``kernels.conv``)."""
        return self.n_prototypes, -(-self.height // self.cell), -(-self.width // self.cell)

    def stages(self, prototypes: str | None = None) -> list[Stage]:
        """The denoise and hots stage objects, as config.toml builds them; without
        ``prototypes`` (a .npy or model .npz path) the HOTS layer learns online."""
        hots = HotsParams(radius=self.radius, tau_us=self.tau_us, n_prototypes=self.n_prototypes,
                          mode=self.mode, in_channels=2, learn=prototypes is None,
                          prototypes=prototypes)
        return [Denoise("denoise", DenoiseParams(duration_us=self.denoise_us, per_segment=True)),
                Hots("hots", hots)]


def folds(files: list[SegmentFile], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0 .. k-1) of each file: the files of each class in a seeded random order,
    classes one after the other, dealt round-robin; every fold gets len/k files (+-1) and
    every class's share (+-1)."""
    labels = np.array([f.label for f in files])
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == label))
                            for label in sorted(set(labels))])
    fold = np.empty(len(files), np.int64)
    fold[order] = np.arange(len(files)) % k
    return fold


class DatasetError(ValueError):
    """A dataset folder, or a split of it, that training and evaluation cannot use."""


LAYOUT = "one subfolder per class, named after the class, holding its recordings (DATA/0/*.bin, DATA/1/*.bin, ...)"


def labelled_files(data) -> list[SegmentFile]:
    """The recordings of dataset folder ``data``, each labelled with its class folder's name;
    DatasetError (naming ``data`` and the layout expected, ``LAYOUT``) when it has none."""
    try:
        files = dataset_files(data)
    except FormatError as exc:
        raise DatasetError(f"{exc}; a dataset is a folder with {LAYOUT}") from None
    if any(f.label is None for f in files):
        where = "is a single recording" if os.path.isfile(data) else \
            f"holds {len(files)} recording(s) but no class subfolders"
        raise DatasetError(f"{data} {where}; a dataset is a folder with {LAYOUT}")
    return files


def share_of(files: list[SegmentFile], share: float, seed: int = 0) -> list[SegmentFile]:
    """``share`` (0 < share <= 1) of ``files``, class by class: of each class's files, in a
    seeded random order, the first ``max(1, round(share * n))`` (all at share 1); in the order
    of ``files``. A smaller share's files are among a larger one's (same seed), so the points of
    a learning curve differ only by the files added."""
    if not 0 < share <= 1:
        raise DatasetError(f"the training share (--train-share) must be in (0, 1], got {share}")
    labels = np.array([f.label for f in files])
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(files), bool)
    for label in sorted(set(labels)):
        members = rng.permutation(np.flatnonzero(labels == label))
        keep[members[:max(1, round(share * len(members)))]] = True
    return [f for f, kept in zip(files, keep) if kept]


def select(data, k: int = 0, fold: int = 0, test: bool = True, seed: int = 0,
           share: float = 1.0) -> list[SegmentFile]:
    """The labelled files of dataset folder ``data`` (``labelled_files``): all (k = 0), the test
    fold ``fold`` of k, or the other k - 1 folds; of the training files (all, or the other
    folds) only ``share`` of each class (``share_of``), the test fold whole."""
    files = labelled_files(data)
    if k <= 0:
        return share_of(files, share, seed)
    if not 0 <= fold < k:
        raise DatasetError(f"the held-out fold must be in [0, {k}), got {fold}")
    if k > len(files):
        raise DatasetError(f"{data}: {len(files)} recording(s) cannot be split into {k} folds")
    chosen = (folds(files, k, seed) == fold) == test
    kept = [f for f, keep in zip(files, chosen) if keep]
    return kept if test else share_of(kept, share, seed)


def replay_packets(files: list[SegmentFile], packet_us: int, desc: str = ""):
    """Packets of ``files`` back to back (one segment each, as the replay source emits them),
    with a progress bar counting samples."""
    replay = Replay("replay", files[0].path, packet_us=packet_us)
    replay.files = list(files)
    with tqdm(total=len(files), desc=desc, unit="sample", disable=None if desc else True,
              leave=False) as bar:
        for packet in replay.packets():
            yield packet
            if packet.header.segment is not None and packet.header.segment.end:
                bar.update()


class InputTap(Stage):
    """A pass-through stage keeping each segment's SNN input indices (the feature events mapped as
    the snn stage maps them) and its label; ``on_segment(indices, label)`` runs at segment end."""

    def __init__(self, spec: FeatureSpec, on_segment):
        super().__init__("input_tap")
        self.spec = spec
        self.on_segment = on_segment
        self.pieces: list[np.ndarray] = []

    def process(self, packet: Packet) -> list[Packet]:
        records, segment = packet.records, packet.header.segment
        if segment is not None and segment.start:
            self.pieces = []
        idx = np.empty(len(records), np.int64)
        s = self.spec
        map_inputs(records["x"], records["y"], records["f"], s.width, s.height, s.cell,
                   s.n_prototypes, idx)
        self.pieces.append(idx[idx >= 0])
        if segment is not None and segment.end:
            self.on_segment(np.concatenate(self.pieces), segment.label)
        return [packet]


def learn_prototypes(files: list[SegmentFile], spec: FeatureSpec, n_samples: int = 100,
                     seed: int = 0) -> np.ndarray:
    """HOTS prototypes (dim, N) learnt online by the hots stage on ``n_samples`` seeded random
    training files (Lagorce et al. 2017, Algorithm 1)."""
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in sorted(rng.permutation(len(files))[:n_samples])]
    stages = spec.stages()
    run_chain(replay_packets(chosen, spec.packet_us, "prototypes"), stages)
    return stages[-1].protos.copy()


class PerFile:
    """A chain of stages built once and run on one file at a time: a worker keeps it
    (``pipeline.learn.cluster.reused``) and streams file after file through it, as the replay
    would stream them back to back; every stage starts afresh at a segment start. Subclasses set
    ``stages`` and ``packet_us`` and fill ``result`` from their taps at the segment end."""

    stages: list[Stage]
    packet_us: int
    result = None

    def run(self, file: SegmentFile):
        """What the taps made of ``file``; None when it produced no packets (unreadable)."""
        self.result = None
        run_chain(replay_packets([file], self.packet_us), self.stages)
        return self.result


@dataclass(frozen=True)
class FeatureJob:
    """Feature parameters and the frozen HOTS prototypes (a shipped .npy), for the workers."""

    spec: FeatureSpec
    prototypes: Shipped

    @classmethod
    def of(cls, spec: FeatureSpec, prototypes: np.ndarray) -> FeatureJob:
        buffer = io.BytesIO()
        np.save(buffer, prototypes)
        return cls(spec, Shipped(buffer.getvalue(), ".npy"))


class _Features(PerFile):
    def __init__(self, job: FeatureJob):
        self.packet_us = job.spec.packet_us
        self.stages = job.spec.stages(job.prototypes.path()) + [InputTap(job.spec, self._keep)]

    def _keep(self, idx: np.ndarray, label: str) -> None:
        self.result = (idx, label)


def file_inputs(job: FeatureJob, file: SegmentFile) -> tuple[np.ndarray, str] | None:
    """One file's SNN input indices in time order (int64) and its label; None when unreadable."""
    return reused(("features", job), lambda: _Features(job)).run(file)


def readable_inputs(files: list[SegmentFile], spec: FeatureSpec, prototypes: np.ndarray,
                    desc: str = "features", runner: Runner | None = None
                    ) -> tuple[list[SegmentFile], list[np.ndarray], list[str]]:
    """The readable ``files`` (an unreadable one is skipped, logged by the replay) and, for
    each, its SNN input indices in time order (int64) and its label; the files are mapped over
    ``runner``'s workers (default: this process)."""
    job = FeatureJob.of(spec, prototypes)
    done = (runner or Runner()).map(file_inputs, files, desc, shared=job)
    kept = [(file, result) for file, result in zip(files, done.results) if result is not None]
    return [file for file, _ in kept], [idx for _, (idx, _) in kept], [label for _, (_, label) in kept]


def extract(files: list[SegmentFile], spec: FeatureSpec, prototypes: np.ndarray,
            desc: str = "features", runner: Runner | None = None
            ) -> tuple[list[np.ndarray], list[str]]:
    """Per readable file, its SNN input indices and its label (``readable_inputs``)."""
    return readable_inputs(files, spec, prototypes, desc, runner)[1:]


def prefix_features(idx: np.ndarray, n: int, fraction: float = 1.0) -> np.ndarray:
    """Feature vector (float64 [n], sums to 1) of the first ``fraction`` of a sample's inputs."""
    k = max(1, int(round(fraction * len(idx))))
    counts = np.bincount(idx[:k], minlength=n).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def feature_matrix(inputs: list[np.ndarray], n: int, fractions=PREFIXES) -> np.ndarray:
    """Rows: every sample at every fraction, fraction-major (all samples at fractions[0], ...)."""
    return np.array([prefix_features(idx, n, f) for f in fractions for idx in inputs])


def tile_columns(spec: FeatureSpec, tile: int) -> tuple[np.ndarray, int]:
    """Tile coding of the input cells (CMAC, Albus 1975; Sutton and Barto 2018, section 9.5.4):
    ``tile * tile`` tilings of square tiles of ``tile`` x ``tile`` cells, the tiles of tiling
    (ox, oy) starting ox cells left of and oy cells above the first cell (0 .. tile - 1), so
    every cell-sized shift of the tile grid is one tiling; cell (cx, cy) is in tile
    ((cx + ox) // tile, (cy + oy) // tile). Returns ``columns`` (int64, tilings x
    ``spec.n_inputs``), the column of each SNN input index among the tile counts of all tilings
    concatenated (a tiling's columns: tile ``(ty * tiles_x + tx) * n_prototypes + f``), and the
    number of columns. ``tile = 1``: one tiling, the cells themselves (``columns[0]`` is the
    identity)."""
    n, ny, nx = spec.input_map
    index = np.arange(spec.n_inputs)
    f, cell = index % n, index // n
    cx, cy = cell % nx, cell // nx
    columns, start = [], 0
    for oy in range(tile):
        for ox in range(tile):
            tiles_x = (nx - 1 + ox) // tile + 1
            columns.append(start + (((cy + oy) // tile) * tiles_x + (cx + ox) // tile) * n + f)
            start += tiles_x * ((ny - 1 + oy) // tile + 1) * n
    return np.array(columns), start
