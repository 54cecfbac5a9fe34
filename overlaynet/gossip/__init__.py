"""Control plane gossip: SWIM membership with Lifeguard (swim.py, suspicion.py), piggybacked
dissemination (broadcast.py), network-scoped tables (tables.py), one host's sans-IO core
(node.py), the deterministic simulator (sim.py), and the trio shell with its AES-GCM keyring
(service.py, keyring.py, node_main.py). Wire format: overlaynet/wire/gossip.py."""
