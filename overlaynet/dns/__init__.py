"""The embedded DNS: every container asks 127.0.0.11:53 in its own namespace, the agent answers.

`records.DnsTable` holds the names (per network, per container attachment); `answer` answers a
query for one container without I/O: its hot path patches the ID into an answer kept from the
first identical query, `message.decode_plain` reads a plain query by hand, `parse` reads
everything else with dnslib, and `encode` (dnslib) builds every answer once; `cookies` is RFC
7873's server side. `server.DnsServer` serves the sockets from trio and sums the resolvers'
counters; `upstream` forwards names not known locally to the host's resolvers.
"""
