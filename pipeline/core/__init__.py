"""The data model: event records, packets, the wire format, the stage model, node-type declarations
and the SNN model file. Imports numpy and ``kernels`` only; every other layer builds on it."""
