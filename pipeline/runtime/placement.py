"""Placement: which nodes of a graph share a worker, and which links are direct calls.

A worker is one thread (``runner = "threads"``) or one process (``runner = "processes"``)
running one or more nodes. Inside a worker a link is a direct call: the packets a node returns
are handed to the next node's ``process`` in the same thread, in order, with no encoding and no
socket (operator chaining, as Apache Flink chains operators into one task and GStreamer runs
linked elements in one streaming thread). Between workers a link is a ZeroMQ socket
(``pipeline.runtime.links``).

Every placement keeps three rules (explicit ``worker`` keys that break one are config errors;
automatic placement keeps them by construction, or falls back to one worker per node where a
piece would break one):

- a live link, or a link given an ``address``, joins two different workers: a live sender must
  never wait for its receiver, and an address asks for a socket;
- a worker holds at most one source, and a worker with a source takes no socket input: its thread
  runs inside the source's loop and would never read it;
- the workers, joined by their socket links, form no cycle: two workers each blocked on a lossless
  send to the other would wait forever.

Automatic placement (``[graph] placement = "auto"``, the default) puts the nodes joined by links
that may be direct calls into one chain each, and cuts a chain into at most ``cores``
consecutive pieces (in topological order) where that lowers the estimated cost of the busiest
worker: the sum of its node types' ``weight`` (us per packet, ``pipeline.core.nodetype``) and
``NODE_US`` per node, plus ``SEND_US`` per socket leaving it and ``RECEIVE_US`` per socket
entering it. With the threads runner a chain is never cut, since Python
threads share one interpreter lock. ``placement = "per_node"`` gives every node a worker of its
own, as ``evpipe stage`` runs a node.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

# The cost of one 1 ms packet of the default graph through a socket link, us, at each end
# (batched, pipeline/runtime/links.py): holding, encoding and sending it, receiving, validating
# and decoding it (``python -m bench.bench_graph costs CONFIG``: link_send and link_receive,
# 3.5-4 us each); and what the worker adds per node (stamping, metrics), from the one-worker
# graph against the chain (bench/bench_graph.py).
SEND_US = 4.0
RECEIVE_US = 4.0
NODE_US = 2.0


@dataclass(frozen=True)
class Edge:
    """A link as placement sees it; ``socket``: it must stay a socket (live, or addressed)."""

    source: str
    target: str
    socket: bool


@dataclass(frozen=True)
class Problem:
    """A rule a grouping breaks: the worker, and the node or the link index to blame."""

    worker: str
    message: str
    node: str | None = None
    link: int | None = None


@dataclass(frozen=True)
class WorkerPlan:
    """One worker: its name (the config's ``worker`` key, or its nodes' names joined by ``+``)
    and its nodes in topological order."""

    name: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    workers: tuple[WorkerPlan, ...]
    direct: frozenset[tuple[str, str]]  # (source, target) of every link that is a direct call

    def describe(self) -> str:
        """One line for the log, e.g. ``replay+denoise | snn+decoder``."""
        return " | ".join(worker.name for worker in self.workers)


def topological(names: list[str], edges: list[Edge]) -> list[str]:
    """``names`` in an order where every link goes forward (Kahn's algorithm, stable)."""
    indegree = {name: 0 for name in names}
    for edge in edges:
        indegree[edge.target] += 1
    order, ready = [], [name for name in names if indegree[name] == 0]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for edge in edges:
            if edge.source == name:
                indegree[edge.target] -= 1
                if indegree[edge.target] == 0:
                    ready.append(edge.target)
    return order


def problems(groups: dict[str, str], sources: set[str], edges: list[Edge]) -> list[Problem]:
    """Every rule of the module docstring that ``groups`` (node -> worker name) breaks."""
    found = []
    for index, edge in enumerate(edges):
        worker = groups[edge.source]
        if edge.socket and worker == groups[edge.target]:
            found.append(Problem(worker, f"{edge.source} -> {edge.target} is live or has an "
                                         f"address, so it needs a socket: its ends cannot share "
                                         f"worker {worker!r}", link=index))
    members = defaultdict(list)
    for node, worker in groups.items():
        members[worker].append(node)
    for worker, nodes in members.items():
        held = [node for node in nodes if node in sources]
        if len(held) > 1:
            found.append(Problem(worker, f"worker {worker!r} holds two sources, {held[0]} and "
                                         f"{held[1]}; a worker runs one source's loop",
                                 node=held[1]))
        elif held:
            entering = [edge for edge in edges
                        if groups[edge.target] == worker and groups[edge.source] != worker]
            if entering:
                edge = entering[0]
                found.append(Problem(worker, f"worker {worker!r} runs source {held[0]} and so "
                                             f"reads no socket, but {edge.source} -> "
                                             f"{edge.target} enters it from another worker",
                                     node=held[0]))
    cycle = _worker_cycle(groups, edges)
    if cycle:  # blamed on the worker of most nodes in it: a node alone cannot close a cycle
        first = max(range(len(cycle)), key=lambda i: (len(members[cycle[i]]), -i))
        cycle = cycle[first:] + cycle[:first]
        found.append(Problem(cycle[0], "workers linked in a cycle would block each other: "
                                       + " -> ".join(cycle + [cycle[0]]), node=members[cycle[0]][0]))
    return found


def _worker_cycle(groups: dict[str, str], edges: list[Edge]) -> list[str]:
    """A cycle of workers through socket links, or [] (depth-first search with colours)."""
    after = defaultdict(set)
    for edge in edges:
        if groups[edge.source] != groups[edge.target]:
            after[groups[edge.source]].add(groups[edge.target])
    state: dict[str, int] = {}

    def visit(worker: str, trail: list[str]) -> list[str]:
        state[worker] = 1
        for nxt in sorted(after[worker]):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [worker] if nxt in trail else [worker]
            if nxt not in state:
                cycle = visit(nxt, trail + [worker])
                if cycle:
                    return cycle
        state[worker] = 2
        return []

    for worker in sorted(set(groups.values())):
        if worker not in state:
            cycle = visit(worker, [])
            if cycle:
                return cycle
    return []


def _chains(free: list[str], sources: set[str], edges: list[Edge]) -> list[list[str]]:
    """The nodes of ``free`` (topological order) joined by links that may be direct calls, one
    list per chain in topological order; a chain's first source leads it, any other source of
    the chain is left alone (a worker runs one source)."""
    chain_of = {name: name for name in free}

    def root(name: str) -> str:
        while chain_of[name] != name:
            name = chain_of[name]
        return name

    for edge in edges:
        if not edge.socket and edge.source in chain_of and edge.target in chain_of:
            chain_of[root(edge.target)] = root(edge.source)
    chains: dict[str, list[str]] = {}
    for name in free:
        chains.setdefault(root(name), []).append(name)
    out = []
    for nodes in chains.values():
        held = [name for name in nodes if name in sources]
        rest = [name for name in nodes if name not in sources]
        out.append(held[:1] + rest)
        out.extend([name] for name in held[1:])
    return out


def _cost(piece: tuple[str, ...], weights: dict[str, float], edges: list[Edge]) -> float:
    inside = set(piece)
    sent = sum(edge.source in inside and edge.target not in inside for edge in edges)
    received = sum(edge.target in inside and edge.source not in inside for edge in edges)
    return (sum(weights[name] + NODE_US for name in piece)
            + SEND_US * sent + RECEIVE_US * received)


def _cut(chain: list[str], most: int, weights: dict[str, float], edges: list[Edge]) -> list[tuple[str, ...]]:
    """``chain`` in at most ``most`` consecutive pieces with the lowest busiest-piece cost
    (fewer pieces on a tie): every cut is tried, chains being a handful of nodes."""
    best, best_cost = [tuple(chain)], _cost(tuple(chain), weights, edges)
    for pieces in range(2, min(most, len(chain)) + 1):
        for cuts in itertools.combinations(range(1, len(chain)), pieces - 1):
            bounds = (0, *cuts, len(chain))
            split = [tuple(chain[a:b]) for a, b in zip(bounds, bounds[1:])]
            cost = max(_cost(piece, weights, edges) for piece in split)
            if cost < best_cost:
                best, best_cost = split, cost
    return best


def place(names: list[str], sources: set[str], edges: list[Edge], weights: dict[str, float],
          assigned: dict[str, str], per_node: bool, cores: int) -> tuple[Placement, list[Problem]]:
    """The placement of a graph, and the problems of its explicit ``worker`` keys ([] when they
    keep the rules). ``assigned``: node -> worker named by the config; the other nodes each get
    a worker (``per_node``) or are placed automatically over ``cores``."""
    order = topological(names, edges)
    groups = dict(assigned)
    free = [name for name in order if name not in assigned]
    for name in free:
        groups[name] = name
    explicit = problems(groups, sources, edges)
    if explicit:
        return _placement(order, groups, edges), explicit
    if not per_node:
        for chain in _chains(free, sources, edges):
            for piece in _cut(chain, cores, weights, edges):
                trial = dict(groups) | {name: "+".join(piece) for name in piece}
                if not problems(trial, sources, edges):
                    groups = trial
    return _placement(order, groups, edges), []


def _placement(order: list[str], groups: dict[str, str], edges: list[Edge]) -> Placement:
    members: dict[str, list[str]] = {}
    for name in order:
        members.setdefault(groups[name], []).append(name)
    direct = frozenset((edge.source, edge.target) for edge in edges
                       if not edge.socket and groups[edge.source] == groups[edge.target])
    return Placement(tuple(WorkerPlan(name, tuple(nodes)) for name, nodes in members.items()), direct)
