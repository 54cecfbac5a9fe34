#!/bin/sh
# dockersamples/atsea-appserver:1.0 stand-in: start lines, then busybox httpd on 8080.
echo "Starting AtSea application server (overlaynet stand-in) on $(hostname)"
echo "Tomcat started on port(s): 8080 (http)"
exec httpd -f -v -p 8080 -h /srv/www
