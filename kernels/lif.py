"""Exact event-driven layers of leaky (LIF) and non-leaky (IF) integrate-and-fire neurons.

Model (per neuron j of layer l, time t in us, no time step)::

    dv_j/dt = -(v_j - b_j * tau_l) / tau_l     between inputs (leaky; b_j: bias in potential/us)
    dv_j/dt = 0                                 between inputs (non-leaky, tau_l = inf, no bias)
    v_j += W_l[i, j]                            when presynaptic i spikes (unless j is refractory)

A bias current b_j therefore moves the potential exponentially towards its resting level
``r_j = b_j * tau_l``, integrated in closed form between inputs. Biases are restricted to
``r_j < theta_j`` (and to leaky layers), so a potential below threshold never crosses it between
inputs: every spike happens at the time of an input and is timed exactly.

Scaled-potential trick (one time constant per layer): the state holds
``u_j = (v_j - r_j) * exp((t - t0_l) / tau_l)``, which is constant between inputs. An input at
time t costs one ``g = exp((t - t0_l)/tau_l)`` per layer and one multiply-add ``u_j += W[i, j] * g``
per synapse; the threshold test is ``u_j >= (theta_j - r_j) * g``. When ``(t - t0_l)/tau_l``
exceeds ``RENORM_EXPONENT`` the layer is renormalised (``u *= 1/g``, ``t0_l = t``), which keeps
``u`` far from float64 overflow; this costs one pass over the layer, rarely.

Semantics, stated for the reference in the tests and for Brian2 comparisons:

- After each input delivered to a layer, every non-refractory neuron of that layer that the input
  reaches and whose potential is >= theta fires once, at the input's time (a neuron fires at most
  once per delivered input; after a reset by subtraction a potential still above theta fires at
  the next input that reaches it). An input reaches every neuron of a dense layer, and the
  neurons of its kernel's neighbourhood in a convolutional layer (``kernels.conv``).
- Reset to zero sets v = 0; reset by subtraction sets v -= theta.
- Refractory period ``ref_l`` us: a neuron that fired at t_s discards every input with
  t < t_s + ref_l (they neither add to v nor make it fire); its potential keeps following its own
  dynamics (decay towards r_j) meanwhile. ``ref_l = 0`` means no refractoriness.
- Spikes of layer l are delivered to layer l + 1 at the same time, in the order they were
  emitted (input order, then neuron index; conv layers index their neurons channel-last,
  ``kernels.conv``); all consequences of one input event are computed
  through every layer before the next input event. Deterministic.
- Initial potential v = 0 (not the resting level r).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from kernels import conv
from kernels.conv import IN_C, IN_W, KH, KW, OUT_C, OUT_H, OUT_W, PX, PY, SX, SY
from kernels.snn_input import channel, input_index

RESET_ZERO = 0
RESET_SUBTRACT = 1
RESETS = {"zero": RESET_ZERO, "subtract": RESET_SUBTRACT}
RENORM_EXPONENT = 32.0  # renormalise a layer when its scale factor exceeds e**32 (~8e13)
SPIKE, SAMPLE = 0, 1  # record kinds written by ``run_packet``: an output spike, a potential sample
DENSE, CONV = 0, 1  # layer kinds: dense weights (n_in, n_out), convolution (``kernels.conv``)
KINDS = {"dense": DENSE, "conv": CONV}


class LIFNetwork(NamedTuple):
    """Parameters, packed in plain arrays; build with ``make_network``.

    sizes: int64[L+1] layer widths, inputs first. w: float32 flat, at w_off[l] layer l's weights:
    row-major (sizes[l], sizes[l+1]) for a dense layer, the kernel packed by
    ``conv.pack_kernel`` for a conv layer. Per layer: n_off (first neuron in per-neuron arrays),
    inv_tau (1/us, 0 for IF), reset code, refractory (us), kind (DENSE or CONV), geometry (int64
    row of ``kernels.conv`` slots, zeros for dense layers), fanout (most neurons one delivered
    spike reaches). Per neuron: theta (threshold), rest (r = b * tau, the level a bias drives
    towards), thr (theta - rest).
    """

    sizes: np.ndarray
    w: np.ndarray
    w_off: np.ndarray
    n_off: np.ndarray
    inv_tau: np.ndarray
    reset: np.ndarray
    refractory: np.ndarray
    theta: np.ndarray
    rest: np.ndarray
    thr: np.ndarray
    kind: np.ndarray
    geometry: np.ndarray
    fanout: np.ndarray


class LIFState(NamedTuple):
    """Mutable state: u (float64 per neuron, scaled shifted potential), t0 (int64 per layer, us),
    ref_until (int64 per neuron: first time, us, at which the neuron accepts input again)."""

    u: np.ndarray
    t0: np.ndarray
    ref_until: np.ndarray


def make_network(weights, thresholds, taus_us, resets="zero", refractory_us=0,
                 biases=None, convs=None) -> LIFNetwork:
    """Pack a network. ``weights[l]`` has shape (n_in, n_out) for a dense layer; with
    ``convs[l]`` a ``conv.ConvShape`` (``None`` or no ``convs``: dense) layer l is convolutional
    and ``weights[l]`` its kernel (out_c, in_c, kh, kw). Thresholds and biases (potential per us)
    are scalars or per-neuron arrays per layer; ``taus_us[l]`` is ``inf`` for IF layers;
    ``resets`` is "zero"/"subtract" (one or per layer); ``refractory_us`` int us (one or per layer).
    """
    n_layers = len(weights)
    per_layer = lambda value: list(value) if isinstance(value, (list, tuple)) else [value] * n_layers
    thresholds, taus_us = per_layer(thresholds), per_layer(taus_us)
    resets, refractory_us = per_layer(resets), per_layer(refractory_us)
    biases = per_layer(0.0 if biases is None else biases)
    convs = list(convs) if convs is not None else [None] * n_layers
    if len(convs) != n_layers:
        raise ValueError(f"{len(convs)} conv shapes for {n_layers} layers")
    geometry = np.zeros((n_layers, conv.GEOMETRY_SIZE), np.int64)
    sizes, fanout, packed = [], [], []
    for l, w in enumerate(weights):
        shape = np.shape(w)
        if convs[l] is not None:
            try:
                geometry[l] = conv.geometry(shape, convs[l])
            except ValueError as error:
                raise ValueError(f"layer {l}: {error}") from None
            n_in, n_out = conv.n_in(geometry[l]), conv.n_out(geometry[l])
            fanout.append(conv.fanout(geometry[l]))
            packed.append(conv.pack_kernel(w))
        else:
            if len(shape) != 2:
                raise ValueError(f"layer {l}: dense weights must be (n_in, n_out), got {shape}")
            n_in, n_out = shape
            fanout.append(n_out)
            packed.append(np.asarray(w, dtype=np.float32).ravel())
        if sizes and n_in != sizes[-1]:
            raise ValueError(f"layer {l}: takes {n_in} inputs, the layer before has {sizes[-1]} "
                             f"neurons")
        sizes += [n_in, n_out] if not sizes else [n_out]
    theta, rest = [], []
    for l in range(n_layers):
        n = sizes[l + 1]
        th = np.broadcast_to(np.asarray(thresholds[l], dtype=np.float64), (n,))
        b = np.broadcast_to(np.asarray(biases[l], dtype=np.float64), (n,))
        tau = float(taus_us[l])
        if not tau > 0:
            raise ValueError(f"layer {l}: tau must be > 0 us (inf for IF), got {tau}")
        if np.any(th <= 0):
            raise ValueError(f"layer {l}: thresholds must be > 0")
        if np.isinf(tau) and np.any(b != 0):
            raise ValueError(f"layer {l}: bias currents need a leaky layer (finite tau)")
        r = b * tau if np.isfinite(tau) else np.zeros(n)
        if np.any(r >= th):
            raise ValueError(f"layer {l}: bias * tau must stay below threshold (no bias-driven "
                             f"spikes between inputs)")
        if resets[l] not in RESETS:
            raise ValueError(f"layer {l}: reset must be one of {sorted(RESETS)}, got {resets[l]!r}")
        if int(refractory_us[l]) < 0:
            raise ValueError(f"layer {l}: refractory period must be >= 0 us")
        theta.append(th)
        rest.append(r)
    theta, rest = np.concatenate(theta), np.concatenate(rest)
    inv_tau = np.array([0.0 if np.isinf(float(t)) else 1.0 / float(t) for t in taus_us])
    return LIFNetwork(
        sizes=np.asarray(sizes, dtype=np.int64),
        w=np.concatenate(packed),
        w_off=np.concatenate([[0], np.cumsum([len(p) for p in packed])[:-1]]).astype(np.int64),
        n_off=np.concatenate([[0], np.cumsum(sizes[1:])[:-1]]).astype(np.int64),
        inv_tau=inv_tau,
        reset=np.array([RESETS[r] for r in resets], dtype=np.int8),
        refractory=np.asarray(refractory_us, dtype=np.int64),
        theta=theta, rest=rest, thr=theta - rest,
        kind=np.array([DENSE if c is None else CONV for c in convs], dtype=np.int8),
        geometry=geometry, fanout=np.asarray(fanout, dtype=np.int64),
    )


def init_state(net: LIFNetwork, t0: int = 0) -> LIFState:
    """A state with every potential at 0 at time ``t0`` (us)."""
    state = LIFState(np.empty(len(net.theta)), np.empty(len(net.inv_tau), dtype=np.int64),
                     np.empty(len(net.theta), dtype=np.int64))
    reset_state(net, state, t0)
    return state


def reset_state(net: LIFNetwork, state: LIFState, t0: int) -> None:
    """Set every potential to 0 at time ``t0`` (us) and end refractory periods, in place."""
    state.u[:] = -net.rest
    state.t0[:] = t0
    state.ref_until[:] = np.iinfo(np.int64).min


def potentials(net: LIFNetwork, state: LIFState, layer: int, t: int) -> np.ndarray:
    """Membrane potentials v (float64) of ``layer`` at time ``t`` (us, >= the last input)."""
    o, n = net.n_off[layer], net.sizes[layer + 1]
    decay = np.exp(-(t - state.t0[layer]) * net.inv_tau[layer])
    return net.rest[o:o + n] + state.u[o:o + n] * decay


@njit(cache=True, nogil=True)
def _grown(a, n, room):
    """A copy of ``a[:n]`` with room for ``room`` items."""
    b = np.empty(room, a.dtype)
    b[:n] = a[:n]
    return b


# slots of ``_run``'s resume array (int64[RESUME_SIZE]): the input event to go on with, 1 if it
# stopped inside that event, and then the pending delivery (layer, presynaptic neuron) and the
# position of the next queued spike in the output arrays
EVENT, PENDING, LAYER, PRE, NEXT = range(5)
RESUME_SIZE = 5


@njit(cache=True, nogil=True)
def _run(sizes, w, w_off, n_off, inv_tau, reset, refractory, theta, rest, thr, kind, geometry,
         fanout, u, t0, ref_until, in_t, in_idx, out_t, out_neuron, out_layer, out_v, out_src,
         n, resume):
    """Process input events in order from ``resume``, writing spikes to the ``out_*`` arrays
    from slot ``n``, until done (``resume[PENDING]`` 0) or until a delivery could overflow them
    (a delivery to layer l writes at most ``fanout[l]`` spikes): then ``resume`` says where it
    stopped, inside an event, and a call with larger copies of the arrays goes on from there.
    Returns the number of spikes in the arrays. Negative input indices are skipped.

    One loop body delivers every presynaptic spike: the input event to layer 0, then the spikes
    already written at ``out[next:n]`` in order (breadth first, so layer by layer), each to the
    layer after its own. Keeping it in one function without array-passing calls or slices keeps
    numba's reference counting out of the per-spike path.
    """
    capacity = len(out_t)
    last = len(sizes) - 2
    # per neuron of the delivered dense layer: 1 if it fires (uint8, read 8 at a time as uint64)
    crossed = np.zeros((sizes[1:].max() + 7) & ~7, np.uint8)
    words = crossed.view(np.uint64)
    # the neurons of the delivered conv layer that fire, in index order
    conv_hits = np.empty(fanout.max(), np.int64)
    start = resume[EVENT]
    for e in range(start, len(in_t)):
        t = in_t[e]
        if e == start and resume[PENDING]:
            # g of the pending layer is computed again: the same value, t0 is not moved twice
            layer, pre, next_, g_layer = resume[LAYER], resume[PRE], resume[NEXT], -1
        elif in_idx[e] < 0:
            continue
        else:
            layer, pre, next_, g_layer = 0, in_idx[e], n, -1
        while True:
            if n + fanout[layer] > capacity:
                resume[EVENT], resume[PENDING] = e, 1
                resume[LAYER], resume[PRE], resume[NEXT] = layer, pre, next_
                return n
            n_out = sizes[layer + 1]
            o = n_off[layer]
            if layer != g_layer:  # first delivery to this layer for this event
                x = (t - t0[layer]) * inv_tau[layer]
                if x > RENORM_EXPONENT:
                    f = np.exp(-x)
                    for j in range(o, o + n_out):
                        u[j] *= f
                    t0[layer] = t
                    x = 0.0
                g = np.exp(x)
                g_layer = layer
            hits = 0
            if kind[layer] == DENSE:
                # one pass over a contiguous weight row, multiply-add and threshold test, in the
                # form LLVM vectorises: unsigned indices, since numba's wraparound of negative
                # indices (on signed ones) keeps the loop scalar
                r = np.uint64(w_off[layer] + pre * n_out)
                uo = np.uint64(o)
                if refractory[layer] == 0:
                    for j in range(np.uint64(n_out)):
                        v = u[uo + j] + w[r + j] * g
                        u[uo + j] = v
                        c = v >= thr[uo + j] * g
                        crossed[j] = c
                        hits += c
                else:
                    for j in range(np.uint64(n_out)):
                        open_ = t >= ref_until[uo + j]
                        v = u[uo + j] + w[r + j] * g * open_
                        u[uo + j] = v
                        c = open_ & (v >= thr[uo + j] * g)
                        crossed[j] = c
                        hits += c
            else:
                # the kernel's neighbourhood of input (ci, yi, xi), in neuron index order
                # ((oy * W' + ox) * O + q): rows oy with ky = yi + py - oy * sy in [0, kh),
                # columns likewise, every output channel q, weights K[q, ci, ky, kx] contiguous
                in_c, out_c = geometry[layer, IN_C], geometry[layer, OUT_C]
                kh, kw = geometry[layer, KH], geometry[layer, KW]
                sy, sx = geometry[layer, SY], geometry[layer, SX]
                ci = pre % in_c
                ay = pre // in_c // geometry[layer, IN_W] + geometry[layer, PY]
                ax = pre // in_c % geometry[layer, IN_W] + geometry[layer, PX]
                for oy in range(max(0, (ay - kh + sy) // sy),
                                min(geometry[layer, OUT_H] - 1, ay // sy) + 1):
                    for ox in range(max(0, (ax - kw + sx) // sx),
                                    min(geometry[layer, OUT_W] - 1, ax // sx) + 1):
                        # as a dense row: one vectorised pass over the out_c neurons of this
                        # position, then the crossed ones listed (the loop is the dense one's;
                        # shared as an inlined function or a loop over rows, it costs the dense
                        # path 10 to 20 % on the bench_snn goal stream)
                        r = np.uint64(w_off[layer] + ((ci * kh + ay - oy * sy) * kw + ax
                                                      - ox * sx) * out_c)
                        first = (oy * geometry[layer, OUT_W] + ox) * out_c  # within the layer
                        uo = np.uint64(o + first)
                        here = 0
                        for j in range(np.uint64(out_c)):
                            open_ = t >= ref_until[uo + j]
                            v = u[uo + j] + w[r + j] * g * open_
                            u[uo + j] = v
                            c = open_ & (v >= thr[uo + j] * g)
                            crossed[j] = c
                            here += c
                        for j in range(out_c if here else 0):
                            if crossed[j]:
                                conv_hits[hits] = first + j
                                hits += 1
            # the neurons that fire in index order: of a dense layer, from its flags, skipping 8
            # clear ones at a time (bytes past the layer, stale from a wider one, come after the
            # last hit and are never read); of a conv layer, as listed
            q, h, bits = -1, 0, np.uint64(0)
            while h < hits:
                if kind[layer] == DENSE:
                    while not bits:
                        q += 1
                        bits = words[q]
                    j = (q << 3) + (trailing_zeros(bits) >> 3)
                    bits &= bits - np.uint64(1)
                else:
                    j = conv_hits[h]
                h += 1
                k = o + j
                out_t[n] = t
                out_neuron[n] = j
                out_layer[n] = layer
                out_v[n] = rest[k] + u[k] / g
                out_src[n] = e
                n += 1
                if reset[layer] == RESET_ZERO:
                    u[k] = -rest[k] * g
                else:
                    u[k] -= theta[k] * g
                ref_until[k] = t + refractory[layer]
            while next_ < n and out_layer[next_] == last:
                next_ += 1
            if next_ == n:
                break
            layer, pre = out_layer[next_] + 1, out_neuron[next_]
            next_ += 1
    resume[EVENT], resume[PENDING] = len(in_t), 0
    return n


@njit(cache=True, nogil=True)
def _run_all(sizes, w, w_off, n_off, inv_tau, reset, refractory, theta, rest, thr, kind, geometry,
             fanout, u, t0, ref_until, in_t, in_idx, room):
    """``_run`` over all of ``in_t``, ``in_idx`` into output arrays of ``room`` spikes at first,
    doubled whenever full. Returns (spikes written, out_t, out_neuron, out_layer, out_v, out_src).
    """
    out_t, out_neuron = np.empty(room, np.int64), np.empty(room, np.int32)
    out_layer, out_v = np.empty(room, np.int16), np.empty(room, np.float32)
    out_src = np.empty(room, np.int64)
    resume = np.zeros(RESUME_SIZE, np.int64)
    n = 0
    while True:
        n = _run(sizes, w, w_off, n_off, inv_tau, reset, refractory, theta, rest, thr, kind,
                 geometry, fanout, u, t0, ref_until, in_t, in_idx, out_t, out_neuron, out_layer,
                 out_v, out_src, n, resume)
        if not resume[PENDING]:
            return n, out_t, out_neuron, out_layer, out_v, out_src
        room = 2 * room + fanout.max()
        out_t, out_neuron = _grown(out_t, n, room), _grown(out_neuron, n, room)
        out_layer, out_v = _grown(out_layer, n, room), _grown(out_v, n, room)
        out_src = _grown(out_src, n, room)


SPIKE_FIELDS = ("t", "neuron", "layer", "v", "src")


def run(net: LIFNetwork, state: LIFState, t: np.ndarray, idx: np.ndarray,
        capacity: int = 1 << 16) -> dict[str, np.ndarray]:
    """Run input events (t int64 us, sorted; idx int64 input neuron, < 0 skipped) through the
    network, updating ``state``. Returns the spikes of every layer in emission order as arrays
    ``t`` (us), ``neuron`` (index within its layer), ``layer``, ``v`` (potential at the crossing,
    before reset) and ``src`` (index of the input event that caused it). ``capacity``: the
    spikes the output arrays hold at first (they grow as needed)."""
    t = np.ascontiguousarray(t, dtype=np.int64)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if len(idx) and (idx.max() >= net.sizes[0]):
        raise ValueError(f"input index {int(idx.max())} out of range for {net.sizes[0]} inputs")
    room = min(capacity, 4 * len(t) + 64)  # sized for the call: a small packet allocates little
    n, *spikes = _run_all(*net, *state, t, idx, room)
    return {name: column[:n] for name, column in zip(SPIKE_FIELDS, spikes)}


# slots of ``run_packet``'s cursor (int64[CURSOR_SIZE]): input events seen since the last reset,
# the time the network has been run to (us), the first time of the last packet's output (us)
SEEN, T_NOW, T_FIRST = range(3)
CURSOR_SIZE = 3


def packet_cursor() -> np.ndarray:
    """A fresh cursor for ``run_packet``: nothing seen, at time 0."""
    return np.zeros(CURSOR_SIZE, np.int64)


@njit(cache=True, nogil=True)
def run_packet(sizes, w, w_off, n_off, inv_tau, reset, refractory, theta, rest, thr, kind,
               geometry, fanout, u, t0, ref_until, records, width, height, cell, channels,
               keep_layer, t_last, cursor, out):
    """One packet through the network in one compiled call: input mapping, ``_run``, potentials
    and the output records.

    ``records``: structured events (fields t in us, sorted, x, y and p) or feature events (f
    instead of p), mapped to input neurons by ``kernels.snn_input.input_index`` with the layout
    (``width``, ``height``, ``cell``, ``channels``), which must fit the network's inputs.
    ``out``: a structured array with fields t, seen, neuron, v, layer and kind, replaced by a
    larger one of the same dtype when too small; it receives the spikes (of every layer with
    ``keep_layer < 0``, else of that layer only), in emission order, kind ``SPIKE``, seen = input
    events since the last reset up to and including the causing one, then one potential sample
    per output neuron (kind ``SAMPLE``) at ``t_end = max(last input time, t_last,
    cursor[T_NOW])`` (us; the potentials are never read before an input already run).

    ``cursor`` (``packet_cursor``) carries the running counts. Returns (records written, the
    array holding them); ``cursor[T_FIRST]`` and ``cursor[T_NOW]`` are the output's first and
    last time. Spikes and potentials equal those of ``map_inputs``, ``run`` and ``potentials``;
    the samples' decay factor comes from libm's exp here, numpy's own there (they may differ in
    the last bit; float32 samples at most by one float32 step, IF output layers not at all:
    exp(0) = 1).
    """
    n_in = len(records)
    seen0 = cursor[SEEN]
    last = len(sizes) - 2
    n_samples = sizes[last + 1]
    in_t = np.empty(n_in, np.int64)
    in_idx = np.empty(n_in, np.int64)
    for e in range(n_in):
        in_t[e] = records[e].t
        k = input_index(records[e].x, records[e].y, channel(records, e), width, height, cell,
                        channels)
        if k >= sizes[0]:
            raise ValueError("input index out of range for the network's inputs")
        in_idx[e] = k
    written, out_t, out_neuron, out_layer, out_v, out_src = _run_all(
        sizes, w, w_off, n_off, inv_tau, reset, refractory, theta, rest, thr, kind, geometry,
        fanout, u, t0, ref_until, in_t, in_idx, 4 * n_in + 64)
    if written + n_samples > len(out):
        out = np.empty(written + n_samples, out.dtype)
    n = 0
    for s in range(written):
        if keep_layer < 0 or out_layer[s] == keep_layer:
            record = out[n]
            record.t, record.neuron, record.v = out_t[s], out_neuron[s], out_v[s]
            record.layer, record.kind = out_layer[s], SPIKE
            record.seen = seen0 + out_src[s] + 1
            n += 1
    t_now = cursor[T_NOW]
    t_end = max(in_t[n_in - 1] if n_in else t_now, t_last, t_now)
    o = n_off[last]
    decay = np.exp(-(t_end - t0[last]) * inv_tau[last])
    for j in range(n_samples):
        record = out[n]
        record.t, record.seen, record.neuron = t_end, seen0 + n_in, j
        record.v = rest[o + j] + u[o + j] * decay
        record.layer, record.kind = last, SAMPLE
        n += 1
    cursor[SEEN] = seen0 + n_in
    cursor[T_NOW], cursor[T_FIRST] = t_end, records[0].t if n_in else t_end
    return n, out
