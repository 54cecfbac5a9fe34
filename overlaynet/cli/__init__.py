"""The docker-like client: parses arguments, calls an agent's API (or the lab package), prints."""
