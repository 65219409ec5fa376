"""Node types usable in config.toml; every module here registers its types on import."""
