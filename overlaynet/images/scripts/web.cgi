#!/bin/sh
# overlaynet/web: busybox httpd runs this for `/`; it says who served the request and whom it saw.
# OVERLAYNET_NAME / OVERLAYNET_NODE are the container's (or task's) name and its host, when the
# runtime sets them; the hostname (the short container id) otherwise.
printf 'Content-Type: text/plain\r\n\r\n'
printf 'Name: %s\n' "${OVERLAYNET_NAME:-$(hostname)}"
printf 'Hostname: %s\n' "$(hostname)"
printf 'Host: %s\n' "${OVERLAYNET_NODE:-unknown}"
for cidr in $(ip -o -4 addr show scope global | awk '{print $4}'); do
    printf 'IP: %s\n' "${cidr%/*}"
done
# busybox httpd on a dual-stack socket reports an IPv4 client as [::ffff:a.b.c.d].
addr=${REMOTE_ADDR#[}
addr=${addr%]}
addr=${addr#::ffff:}
case $addr in
*:*) printf 'RemoteAddr: [%s]:%s\n' "$addr" "$REMOTE_PORT" ;;
*) printf 'RemoteAddr: %s:%s\n' "$addr" "$REMOTE_PORT" ;;
esac
