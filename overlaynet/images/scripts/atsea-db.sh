#!/bin/sh
# dockersamples/atsea-db:mssql stand-in: SQL Server's start lines, then a listener on 1433 that
# greets each client (enough for the app server to know `database` is there).
log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S.00') $*"; }
log "Server      Microsoft SQL Server 2017 (RTM) - overlaynet stand-in (busybox nc)"
log "Server      Server process ID is $$."
log "spid4s      Starting up database 'atsea'."
log "spid19s     Server is listening on [ 'any' <ipv4> 1433]."
log "Server      SQL Server is now ready for client connections. This is an informational message; no user action is required."
exec nc -ll -p 1433 -e /usr/local/bin/atsea-db-session
