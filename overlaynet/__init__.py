"""overlaynet: Docker Swarm-style multi-host container networking, built in the open."""
