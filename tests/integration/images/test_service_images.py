"""The service images answer over a veth from another namespace, as their catalog entries say."""

from __future__ import annotations

import socket

from overlaynet.host import nssocket
from tests.integration.images.conftest import CLIENT_IP, SERVER_IP, Pair
from tests.integration.labs import wait_until


def _listening(pair: Pair, port: int, ip: str = SERVER_IP) -> bool:
    """Whether a TCP connect from the client namespace to ip:port succeeds."""
    sock = nssocket.socket_in_netns(pair.client, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect((ip, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def test_web_answers_with_its_name_host_and_the_client_address(pair: Pair) -> None:
    web = pair.run("overlaynet/web", env=["OVERLAYNET_NAME=web.1.x7", "OVERLAYNET_NODE=node1"])
    assert wait_until(lambda: _listening(pair, 80)), web.log()
    out = pair.in_client("busybox", "wget", "-qO-", f"http://{SERVER_IP}/")
    assert out.returncode == 0, out.stderr + web.log()
    lines = out.stdout.splitlines()
    assert "Name: web.1.x7" in lines
    assert f"Hostname: {web.name}" in lines
    assert "Host: node1" in lines
    assert f"IP: {SERVER_IP}" in lines
    remote = next(line for line in lines if line.startswith("RemoteAddr: "))
    assert remote.removeprefix("RemoteAddr: ").rsplit(":", 1)[0] == CLIENT_IP


def test_echo_sends_back_what_it_gets(pair: Pair) -> None:
    echo = pair.run("overlaynet/echo")
    assert wait_until(lambda: _listening(pair, 7)), echo.log()
    for message in (b"hello overlay\n", b"second connection\n"):
        sock = nssocket.socket_in_netns(pair.client, socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(10)
            sock.connect((SERVER_IP, 7))
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        assert got == message


def test_atsea_db_logs_its_start_and_the_appserver_reaches_it_by_name(pair: Pair) -> None:
    db = pair.run("dockersamples/atsea-db:mssql")
    assert wait_until(lambda: _listening(pair, 1433)), db.log()
    assert "SQL Server is now ready for client connections" in db.log()
    # The app server in the client namespace finds `database` by name (its /etc/hosts here; the
    # embedded DNS in a real network).
    app = pair.run(
        "dockersamples/atsea-appserver:1.0",
        netns_name=pair.client,
        hosts=f"{SERVER_IP}\tdatabase\n",
    )
    assert wait_until(lambda: _listening(pair, 8080, CLIENT_IP)), app.log()
    assert "8080" in app.log()
    page = _fetch_from_server_ns(pair, f"http://{CLIENT_IP}:8080/")
    assert "database: answered on 1433: atsea-db" in page, page


def test_appserver_says_when_the_database_does_not_answer(pair: Pair) -> None:
    app = pair.run(
        "dockersamples/atsea-appserver:1.0",
        netns_name=pair.client,
        hosts=f"{SERVER_IP}\tdatabase\n",
    )
    assert wait_until(lambda: _listening(pair, 8080, CLIENT_IP)), app.log()
    page = _fetch_from_server_ns(pair, f"http://{CLIENT_IP}:8080/")
    assert "database: no answer on 1433" in page, page


def _fetch_from_server_ns(pair: Pair, url: str) -> str:
    import subprocess

    out = subprocess.run(
        ["ip", "netns", "exec", pair.server, "busybox", "wget", "-qO-", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout
