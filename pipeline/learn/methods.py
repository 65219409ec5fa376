"""The training methods of ``evpipe train --method NAME``, after the families of deep SNN training
in Pfeiffer and Pfeil 2018 ("Deep Learning With Spiking Neurons: Opportunities and Challenges",
Front. Neurosci. 12:774), section 3.

Every entry of ``METHODS`` maps a name to a function with one signature::

    fit(examples: Examples, params: TrainParams, desc: str) -> Trained

(``pipeline.learn.classifier``): ``examples`` holds each training sample's SNN input indices in
time order (the feature events as the snn stage maps them) and its class, ``params`` the
parameters of ``evpipe train``, ``desc`` the label of its progress bars. It returns the network
the exact event-driven core runs (an ``SnnModel``, dense IF or LIF layers) and a JSON-able dict for
the model's ``training`` metadata (``lambdas``, ``train_accuracy_ann`` and what else it records).
Everything around it is shared by every method (``pipeline.learn.train``): the HOTS features, the
decoder's ``k`` and the live read-out calibrated on a held-out fifth with a model the same method
fits on the other four fifths, and the model file. Adding a method is one entry here.
"""

from __future__ import annotations

import importlib

# name -> (module of pipeline.learn, its fit function), imported when the method is chosen: most
# methods bring torch, which takes 1.5-2 s to import and which no other command needs
METHODS = {
    # 3.2: ANN trained freely, then converted (Diehl et al. 2015)
    "conversion": ("classifier", "conversion"),
    # 3.3: ANN trained under the SNN's constraints, then converted
    "constrained": ("constrained", "fit"),
    # 3.1: binary activations and 1-bit weights (Courbariaux et al. 2016)
    "binary": ("binary", "fit"),
    # 3.5: unsupervised STDP feature layer, supervised read-out
    "stdp": ("stdp", "fit"),
    # 3.4: surrogate gradients through time (Neftci et al. 2019)
    "surrogate": ("surrogate", "fit"),
}


def method(name: str):
    """The fit function of method ``name``; ValueError naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown training method {name!r}; known: {', '.join(METHODS)}")
    module, function = METHODS[name]
    return getattr(importlib.import_module(f"pipeline.learn.{module}"), function)
