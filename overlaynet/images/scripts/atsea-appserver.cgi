#!/bin/sh
# The AtSea shop page: which task served it (Docker's `appserver.2.<taskid>@node3`, from the
# runtime's OVERLAYNET_NAME/OVERLAYNET_NODE; the hostname outside a swarm) and whether the
# database answered by name (`database`) on port 1433.
printf 'Content-Type: text/plain\r\n\r\n'
echo "Atsea Shop - served by ${OVERLAYNET_NAME:-$(hostname)}@${OVERLAYNET_NODE:-unknown}"
if reply=$(nc -w 2 database 1433 </dev/null 2>&1) && [ -n "$reply" ]; then
    echo "database: answered on 1433: $reply"
else
    echo "database: no answer on 1433${reply:+ ($reply)}"
fi
