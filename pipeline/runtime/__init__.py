"""Running graphs: the config file, the node-type registry, ZeroMQ links, the loop around one node,
the thread and process runners, and per-node metrics."""
