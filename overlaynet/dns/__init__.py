"""The embedded DNS: every container asks 127.0.0.11:53 in its own namespace, the agent answers.

`records.DnsTable` holds the names (per network, per container attachment); `answer` answers a
query for one container without I/O; `server.DnsServer` serves the sockets from trio;
`upstream` forwards names not known locally to the host's resolvers.
"""
