#!/bin/sh
# One client of the atsea-db stand-in: a greeting line, then the connection closes.
echo "atsea-db: SQL Server stand-in on $(hostname) ready"
