"""The ``evpipe`` program: ``main`` parses the command line, ``commands`` holds one module per subcommand."""
