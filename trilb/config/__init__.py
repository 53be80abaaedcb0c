"""Configuration: the TOML contract, validated into frozen objects."""
