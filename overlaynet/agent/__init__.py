"""The per-host daemon: one trio nursery with a child per plane (VTEP, gossip/control, DNS, API,
swarm member), the host's runtime that keeps the kernel in step with its records, and the store.
Run it with `overlaynet-agent` or `python -m overlaynet.agent`."""
