"""The `overlaynet` command: docker's verbs and output shapes, talking to one host's agent.

`-H/--host NAME` (or OVERLAYNET_HOST) picks the host, `--lab NAME` (or OVERLAYNET_LAB) the lab;
`--lab none` talks to the agent of a real host (a VM).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from overlaynet import api
from overlaynet.cli import (
    arg_counts,
    completion,
    filters,
    formats,
    gotemplate,
    health_flags,
    lab_impair,
    logtail,
    tty_check,
)
from overlaynet.cli.tables import table
from overlaynet.errors import ApiError
from overlaynet.exec_status import exit_status as exec_exit_status
from overlaynet.names import BadName, short_id
from overlaynet.paths import HostPaths

# docker exits 1 for a daemon error, 125 when `run` itself fails (docker run reference).
EXIT_ERROR = 1
EXIT_RUN_FAILED = 125
# docker exits 125 for a command line it cannot parse (cli.StatusError from FlagErrorFunc).
EXIT_USAGE = 125


class CliError(Exception):
    """A one-line error for stderr, with the exit status to leave with."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class DockerStyleParser(argparse.ArgumentParser):
    """argparse with docker's usage errors: `overlaynet: <message>.` plus where to get help on
    stderr, exit 125. Sub-parsers inherit the class, so every verb answers the same way."""

    def error(self, message: str) -> NoReturn:
        counted = arg_counts.usage_error_text(self.prog, self._actions, message)
        if counted is not None:
            self.exit(EXIT_USAGE, counted)
        root = self.prog.split()[0]
        message = message if message.endswith((".", "!", "?")) else message + "."
        self.exit(EXIT_USAGE, f"{root}: {message}\nSee '{self.prog} --help'.\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        # The innermost parser runs first: remember it, so a stray word is reported against
        # the verb it was typed after (`See 'overlaynet network ls --help'`).
        if not hasattr(ns, "_verb_parser"):
            ns._verb_parser = self
        return ns, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            verb: argparse.ArgumentParser = getattr(ns, "_verb_parser", self)
            flags = [e for e in extras if e.startswith("-") and e != "-"]
            if flags:
                verb.error(f"unknown flag: {flags[0]}")
            verb.error(f'"{verb.prog}" accepts no argument {extras[0]!r} here')
        return ns


def _filter_arg(spec: str) -> tuple[str, str]:
    try:
        return filters.parse_filter(spec)
    except filters.FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _select(kind: filters.Kind, ns: argparse.Namespace, rows: list[Any]) -> list[Any]:
    """The rows `--filter` keeps; a filter docker refuses is refused the same way."""
    try:
        return kind.select(filters.Filters.of(ns.filter or []), rows)
    except filters.FilterError as e:
        raise CliError(f"Error response from daemon: {e}") from None


def _print_listing(
    listing: formats.Listing, ns: argparse.Namespace, contexts: list[dict[str, Any]]
) -> None:
    try:
        text = formats.render(listing, ns.format, contexts, quiet=ns.quiet)
    except gotemplate.TemplateError as e:
        raise CliError(f"template parsing error: {e}") from None
    if text:
        print(text)


def _host_paths(ns: argparse.Namespace) -> HostPaths:
    lab = ns.lab
    if lab in ("none", ""):
        return HostPaths(ns.host or socket.gethostname().split(".")[0], None)
    return HostPaths(ns.host or "node1", lab)


def _client(ns: argparse.Namespace, timeout: float | None = 120.0) -> api.Client:
    return api.Client(_host_paths(ns).socket, timeout=timeout)


# How long a CLI command waits for its agent's answer by default.
DEFAULT_WAIT = 120.0


def call(ns: argparse.Namespace, op: str, wait: float | None = DEFAULT_WAIT, **args: Any) -> Any:
    """One API call; `wait` is how long to wait for the answer (None: as long as it takes)."""
    paths = _host_paths(ns)
    try:
        return _client(ns, wait).call(op, **args)
    except api.AgentDown:
        raise CliError(_agent_down(paths)) from None
    except PermissionError:
        raise CliError(
            "permission denied while trying to connect to the overlaynet agent socket at "
            f"unix://{paths.socket}: overlaynet talks to its agents as root (try sudo)"
        ) from None
    except ApiError as e:
        raise CliError(f"Error response from daemon: {e}") from None
    except TimeoutError:
        raise CliError(f"the agent of {paths.host} did not answer in time") from None


def _agent_down(paths: HostPaths) -> str:
    """Why no agent answers: a host the lab does not have is named as such, with the lab's."""
    where = f"host {paths.host} of lab {paths.lab}" if paths.lab else f"host {paths.host}"
    if paths.lab:
        from overlaynet import lab

        hosts = [h.name for h in lab.read_hosts(paths.lab)]
        if hosts and paths.host not in hosts:
            return (
                f"Cannot connect to the overlaynet agent of {where}: lab {paths.lab} has no host "
                f"{paths.host}; its hosts are {', '.join(hosts)} (pick one with -H, or build a "
                f"bigger lab with `overlaynet lab up --name {paths.lab} --hosts N`)"
            )
        hint = f"start it with `overlaynet lab up --name {paths.lab}`"
    else:
        hint = "start it with `overlaynet agent --host NAME`"
    return (
        f"Cannot connect to the overlaynet agent of {where} at unix://{paths.socket}. "
        f"Is the agent running? ({hint})"
    )


def _print_json(docs: list[Any], template: str | None) -> None:
    if template is None:
        print(json.dumps(docs, indent=4))
        return
    for doc in docs:
        try:
            print(gotemplate.render(template, doc))
        except gotemplate.TemplateError as e:
            raise CliError(str(e)) from None


def _key_values(items: Sequence[str] | None, what: str, bare: bool = False) -> dict[str, str]:
    """KEY=VALUE items; with `bare`, a lone KEY means an empty value, as Docker reads
    `--opt encrypted` and `--label K`."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key or not (sep or bare):
            expected = "KEY[=VALUE]" if bare else "KEY=VALUE"
            raise CliError(f"invalid {what} {item!r}: expected {expected}")
        out[key] = value
    return out


# ---- networks ------------------------------------------------------------------------------


def cmd_network_create(ns: argparse.Namespace) -> int:
    res = call(
        ns,
        "network.create",
        name=ns.name,
        driver=ns.driver,
        subnet=ns.subnet,
        gateway=ns.gateway,
        options=_key_values(ns.opt, "option", bare=True),
        labels=_key_values(ns.label, "label", bare=True),
        internal=ns.internal,
        attachable=ns.attachable,
        ip_range=ns.ip_range,
    )
    print(res["id"])
    return 0


def cmd_network_ls(ns: argparse.Namespace) -> int:
    rows = _select(filters.NETWORKS, ns, call(ns, "network.ls"))
    contexts = [formats.network_context(r, trunc=not ns.no_trunc) for r in rows]
    _print_listing(formats.NETWORKS, ns, contexts)
    return 0


def _inspect_each(ns: argparse.Namespace, refs: list[str], op: str, arg: str) -> int:
    docs, status = _each(refs, lambda ref: call(ns, op, DEFAULT_WAIT, **{arg: ref}))
    _print_json(docs, ns.format)
    return status


def cmd_network_inspect(ns: argparse.Namespace) -> int:
    return _inspect_each(ns, ns.networks, "network.inspect", "network")


def cmd_network_rm(ns: argparse.Namespace) -> int:
    from overlaynet.cli import network_rm  # it imports this module: asks before ingress goes

    return network_rm.cmd_network_rm(ns)


def cmd_network_connect(ns: argparse.Namespace) -> int:
    call(
        ns,
        "network.connect",
        network=ns.network,
        container=ns.container,
        ip=ns.ip,
        aliases=ns.alias or [],
    )
    return 0


def cmd_network_peer(ns: argparse.Namespace) -> int:
    res = call(ns, "network.peer", network=ns.network, host=ns.peer_host, add=ns.action == "add")
    print(" ".join(res["peers"]))
    return 0


def cmd_network_fdb(ns: argparse.Namespace) -> int:
    add = ns.action == "add"
    call(ns, "network.fdb", network=ns.network, mac=ns.mac, host=ns.vtep, ip=ns.ip, add=add)
    return 0


def cmd_network_vtep(ns: argparse.Namespace) -> int:
    from overlaynet.cli import vtep_cmd  # imports this module: the view lives there

    return vtep_cmd.cmd_network_vtep(ns)


def cmd_network_disconnect(ns: argparse.Namespace) -> int:
    call(ns, "network.disconnect", network=ns.network, container=ns.container)
    return 0


def _each(refs: list[str], fn: Callable[[str], Any], echo: bool = False) -> tuple[list[Any], int]:
    """Apply to each name; report each failure and go on, as docker does for several names."""
    results, status = [], 0
    for ref in refs:
        try:
            results.append(fn(ref))
            if echo:
                print(ref)
        except CliError as e:
            print(e, file=sys.stderr)
            status = e.status
    return results, status


# ---- containers ----------------------------------------------------------------------------


def _health_labels(ns: argparse.Namespace) -> list[str]:
    try:
        return health_flags.health_labels(ns)
    except health_flags.BadHealthFlags as e:
        raise CliError(str(e), EXIT_RUN_FAILED) from None


def cmd_run(ns: argparse.Namespace) -> int:
    if not ns.detach and (refused := tty_check.refusal(ns.interactive, ns.tty, os.isatty(0))):
        raise CliError(refused)
    args: dict[str, Any] = {
        "image": ns.image,
        "cmd": ns.cmd,
        "name": ns.name,
        "network": ns.network or "bridge",
        "ip": ns.ip,
        "aliases": ns.network_alias or [],
        "env": ns.env or [],
        "interactive": ns.interactive,
        "start": True,
        "labels": (ns.label or []) + _health_labels(ns),
    }
    if ns.hostname is not None:
        args["hostname"] = ns.hostname
    if ns.tty:
        args["tty"] = True
    # `run -i` in the foreground: a pipe's read end goes with the request (SCM_RIGHTS, as
    # exec's streams do) and the container reads it; `-d -i` keeps an open stdin instead.
    attach = ns.interactive and not ns.detach
    try:
        if attach:
            reader = _stdin_pipe()
            try:
                res = _call_attached(ns, "container.create", (reader,), attach=True, **args)
            finally:
                os.close(reader)
        else:
            res = call(ns, "container.create", **args)
    except CliError as e:
        # A command the image lacks: docker's 127 (126 not executable), as docker run.
        raise CliError(str(e), exec_exit_status(str(e)) or EXIT_RUN_FAILED) from None
    if ns.detach:
        print(res["id"])
        return 0
    # SIGTERM of the client ends it as Ctrl-C does: with --rm the container goes too.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        # -it on a terminal: keys go to the container's pty as typed (^C included), as docker.
        with _raw_terminal(ns.tty and ns.interactive):
            code = _follow_until_exit(ns, res["id"])
    except KeyboardInterrupt:
        code = 130  # Ctrl-C of the client
    except _Terminated:
        code = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    if ns.rm:
        call(ns, "container.rm", container=res["id"], force=True)
    return code


class _Terminated(Exception):
    """The client got SIGTERM while it followed its container."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _raw_terminal(wanted: bool) -> Iterator[None]:
    """This terminal in raw mode while the block runs (only if `wanted` and stdin is one)."""
    if not wanted or not os.isatty(0):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _stdin_pipe() -> int:
    """A pipe this process copies its stdin into; the read end is for the container. The
    container never holds the client's own stdin (a terminal it would go on reading after the
    client left): its input ends when the client's does, or when the client goes."""
    reader, writer = os.pipe()

    def pump() -> None:
        try:
            while data := os.read(0, 65536):
                view = memoryview(data)
                while view:
                    view = view[os.write(writer, view) :]
        except OSError:
            pass  # the container closed its end (ended): nothing more to send
        finally:
            os.close(writer)

    threading.Thread(target=pump, daemon=True).start()
    return reader


def _call_attached(ns: argparse.Namespace, op: str, fds: tuple[int, ...], **args: Any) -> Any:
    """A call that sends this process's descriptors with the request (see api.call_attached)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return _client(ns, DEFAULT_WAIT).call_attached(op, fds, **args)
    except api.AgentDown:
        raise CliError(_agent_down(_host_paths(ns))) from None
    except ApiError as e:
        raise CliError(f"Error response from daemon: {e}") from None


def _follow_until_exit(ns: argparse.Namespace, cid: str) -> int:
    result: dict[str, Any] = {}

    def wait() -> None:
        try:
            result["code"] = call(ns, "container.wait", wait=None, container=cid)["StatusCode"]
        except CliError as e:
            result["error"] = e

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    offset = 0
    while True:
        done = not waiter.is_alive()
        chunk, offset, _ = _log_chunk(ns, cid, offset)
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            continue
        if done:
            break
        time.sleep(0.05)
    if "error" in result:
        raise result["error"]
    return int(result.get("code", 0))


def cmd_ps(ns: argparse.Namespace) -> int:
    wanted = filters.Filters.of(ns.filter or [])
    last = 1 if ns.latest and ns.last <= 0 else ns.last
    # docker: a status filter or -n/-l looks at stopped containers too; -n 0 or less: no limit.
    include_all = ns.all or filters.status_implies_all(wanted) or last > 0
    rows = _select(filters.CONTAINERS, ns, call(ns, "container.ls", all=include_all))
    if last > 0:
        rows = rows[:last]  # the agent lists the newest first
    contexts = [formats.container_context(r, trunc=not ns.no_trunc) for r in rows]
    _print_listing(formats.CONTAINERS, ns, contexts)
    return 0


def cmd_start(ns: argparse.Namespace) -> int:
    return _each(ns.containers, lambda c: call(ns, "container.start", container=c), echo=True)[1]


def cmd_stop(ns: argparse.Namespace) -> int:
    timeout = ns.time

    def stop(c: str) -> Any:
        return call(ns, "container.stop", wait=timeout + 30, container=c, timeout=timeout)

    return _each(ns.containers, stop, echo=True)[1]


def cmd_rm(ns: argparse.Namespace) -> int:
    if not ns.containers:
        raise CliError(
            '"rm" requires at least 1 argument: overlaynet rm [OPTIONS] CONTAINER [CONTAINER...]'
        )
    rm = lambda c: call(ns, "container.rm", container=c, force=ns.force)  # noqa: E731
    return _each(ns.containers, rm, echo=True)[1]


def cmd_inspect(ns: argparse.Namespace) -> int:
    kind = getattr(ns, "kind", None)

    def one(ref: str) -> Any:
        if kind == "container":
            return call(ns, "container.inspect", container=ref)
        try:
            return call(ns, "container.inspect", container=ref)
        except CliError:
            try:
                return call(ns, "network.inspect", network=ref)
            except CliError:
                raise CliError(f"Error: No such object: {ref}") from None

    docs, status = _each(ns.objects, one)
    _print_json(docs, ns.format)
    return status


def cmd_exec(ns: argparse.Namespace) -> int:
    """The agent runs the command; it gets this process's stdin, stdout and stderr with the
    request (the API's attach mechanism), so output streams straight to the terminal."""
    if not ns.cmd:
        ns._verb_parser.error(arg_counts.REQUIRED_PREFIX + " cmd")
    if refused := tty_check.refusal(ns.interactive, ns.tty, os.isatty(0)):
        raise CliError(refused)
    env = [f"{k}={v}" for k, v in _key_values(ns.env, "environment variable").items()]
    stdin = 0 if ns.interactive else os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    args = {
        "container": ns.container,
        "cmd": ns.cmd,
        "env": env,
        "term": os.environ.get("TERM", "xterm") if ns.tty else None,
    }
    try:
        # -it on a terminal: keys go to the command's pty as typed (^C included), as docker.
        with _raw_terminal(ns.tty and ns.interactive):
            res = _client(ns, None).call_attached("container.exec", (stdin, 1, 2), **args)
    except api.AgentDown:
        raise CliError(_agent_down(_host_paths(ns))) from None
    except ApiError as e:
        raise CliError(f"Error response from daemon: {e}") from None
    except KeyboardInterrupt:
        return 130  # the agent ends the command when this connection goes
    return int(res["ExitCode"])


def cmd_image_ls(ns: argparse.Namespace) -> int:
    """The agent's image catalog, as `docker image ls` prints images."""
    rows = _select(filters.IMAGES, ns, call(ns, "image.ls"))
    contexts = [
        {**r, "ID": r["ID"] if ns.no_trunc else short_id(r["ID"].removeprefix("sha256:"))}
        for r in rows
    ]
    _print_listing(formats.IMAGES, ns, contexts)
    return 0


def cmd_top(ns: argparse.Namespace) -> int:
    print(call(ns, "container.top", container=ns.container), end="")
    return 0


def _log_chunk(ns: argparse.Namespace, container: str, offset: int) -> tuple[bytes, int, bool]:
    """The next piece of a container's output through the API: (bytes, next offset, running)."""
    res = call(ns, "container.logs", container=container, offset=offset)
    return base64.b64decode(res["data"]), int(res["offset"]), bool(res["running"])


def cmd_logs(ns: argparse.Namespace) -> int:
    """`logs [-f] [-n/--tail N|all] CONTAINER`; `-f` returns once the container has ended and
    all its output is printed."""
    try:
        count = logtail.parse_tail(ns.tail)
    except logtail.TailError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    offset = 0
    tail = logtail.Tail(count) if count is not None else None
    # An empty answer ends the follow only if an earlier answer already said the container had
    # ended: the agent reads the output before it looks at the state, so output written between
    # the two reads comes with the next answer.
    ended = False
    try:
        while True:
            chunk, offset, running = _log_chunk(ns, ns.container, offset)
            if chunk:
                if tail is not None:
                    tail.feed(chunk)
                else:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                continue
            if tail is not None:
                # The log's end as it is now: its last lines, then follow from there.
                sys.stdout.buffer.write(tail.result())
                sys.stdout.buffer.flush()
                tail = None
            if not ns.follow or ended:
                return 0
            ended = not running
            if running:
                time.sleep(0.2)
    except KeyboardInterrupt:
        return 0


def cmd_info(ns: argparse.Namespace) -> int:
    """docker's text layout; `-f json` or a Go template for the document (cli/info_text.py)."""
    from overlaynet.cli import info_text  # it imports this module

    return info_text.cmd_info(ns)


def _client_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("overlaynet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


# docker prints Go's architecture names (GOARCH), not uname's.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}

# docker version's layout (cli/command/system/version.go): a tabwriter of minimum width 20 and
# padding 1, a Client section, then a Server section when the daemon answers.
VERSION_TABWRITER = (20, 1)


def cmd_version(ns: argparse.Namespace) -> int:
    import platform

    from overlaynet.cli.tables import tabwrite

    paths = _host_paths(ns)
    client = {
        "Version": _client_version(),
        "PythonVersion": platform.python_version(),
        "Os": platform.system().lower(),
        "Arch": _GO_ARCH.get(platform.machine(), platform.machine()),
        "Context": f"{paths.host} (lab {paths.lab})" if paths.lab else paths.host,
    }
    server: dict[str, Any] | None = None
    error: CliError | None = None
    try:
        pong = call(ns, "ping", wait=10.0)
        server = {
            "Version": pong.get("version", ""),
            "Host": pong.get("host", ""),
            "Pid": pong.get("pid"),
        }
    except CliError as e:
        error = e
    if ns.format:
        try:
            print(gotemplate.render(ns.format, {"Client": client, "Server": server}))
        except gotemplate.TemplateError as e:
            raise CliError(f"template parsing error: {e}") from None
    else:
        lines = [
            "Client:",
            f" Version:\t{client['Version']}",
            f" Python version:\t{client['PythonVersion']}",
            f" OS/Arch:\t{client['Os']}/{client['Arch']}",
            f" Context:\t{client['Context']}",
        ]
        if server is not None:
            lines += [
                "",
                "Server: overlaynet agent",
                " Engine:",
                f"  Version:\t{server['Version']}",
                f"  Host:\t{server['Host']}",
                f"  Pid:\t{server['Pid']}",
            ]
        print(tabwrite("\n".join(lines), *VERSION_TABWRITER))
    if error is not None:
        raise error
    return 0


def cmd_completion(ns: argparse.Namespace) -> int:
    print(completion.bash_script(build_parser()), end="")
    return 0


def cmd_host_show(ns: argparse.Namespace) -> int:
    """What the agent built in the kernel: bridges with their ports, addresses, routes."""
    k = call(ns, "host.kernel")
    rows = [
        [
            lk["ifname"],
            lk["kind"] or "-",
            lk["master"] or "-",
            lk["state"],
            str(lk["mtu"]),
            lk["mac"],
        ]
        for lk in k["links"]
    ]
    print(table(["LINK", "KIND", "BRIDGE", "STATE", "MTU", "MAC"], rows))
    print()
    print(table(["LINK", "ADDRESS"], [[a, b] for a, b in k["addresses"]]))
    print()
    print(
        table(
            ["ROUTE", "VIA", "DEV"],
            [[r["dst"], r["gateway"] or "-", r["dev"]] for r in k["routes"]],
        )
    )
    return 0


# ---- swarm ---------------------------------------------------------------------------------


def _join_command(token: str, addr: str) -> str:
    return f"    overlaynet swarm join --token {token} {addr}"


def cmd_swarm_init(ns: argparse.Namespace) -> int:
    res = call(
        ns,
        "swarm.init",
        advertise_addr=ns.advertise_addr,
        ingress_subnet=ns.ingress_subnet,
        force_new_cluster=ns.force_new_cluster,
    )
    print(f"Swarm initialized: current node ({res['node_id']}) is now a manager.\n")
    print("To add a worker to this swarm, run the following command:\n")
    print(_join_command(res["worker_token"], res["manager_addr"]) + "\n")
    paths = _host_paths(ns)
    from overlaynet.cli import join_text

    join_text.print_lab_join(paths.lab, paths.host, res["worker_token"], res["manager_addr"])
    print(
        "To add a manager to this swarm, run 'overlaynet swarm join-token manager' "
        "and follow the instructions.\n"
    )
    return 0


def cmd_swarm_join(ns: argparse.Namespace) -> int:
    res = call(ns, "swarm.join", token=ns.token, remote=ns.remote, advertise_addr=ns.advertise_addr)
    print(f"This node joined a swarm as a {res['role']}.")
    return 0


def cmd_swarm_join_token(ns: argparse.Namespace) -> int:
    res = call(ns, "swarm.join_token", role=ns.role, rotate=ns.rotate)
    if ns.quiet:
        print(res["token"])
        return 0
    if ns.rotate:
        print(f"Successfully rotated {ns.role} join token.\n")
    print(f"To add a {ns.role} to this swarm, run the following command:\n")
    print(_join_command(res["token"], res["manager_addr"]) + "\n")
    paths = _host_paths(ns)
    from overlaynet.cli import join_text

    join_text.print_lab_join(paths.lab, paths.host, res["token"], res["manager_addr"])
    return 0


def cmd_swarm_leave(ns: argparse.Namespace) -> int:
    call(ns, "swarm.leave", force=ns.force)
    print("Node left the swarm.")
    return 0


def cmd_node_ls(ns: argparse.Namespace) -> int:
    nodes = _select(filters.NODES, ns, call(ns, "node.ls"))
    _print_listing(formats.NODES, ns, [formats.node_context(n) for n in nodes])
    return 0


def _node_refs(ns: argparse.Namespace, refs: list[str]) -> list[str]:
    """`self` is this host's node, as docker's CLI reads it (the NodeID its `info` gives)."""
    if "self" not in refs:
        return refs
    swarm = call(ns, "info").get("Swarm") or {}
    if not swarm.get("NodeID"):
        raise CliError(
            'Error response from daemon: This node is not a swarm manager. Use "overlaynet '
            'swarm init" or "overlaynet swarm join" to connect this node to swarm and try again.'
        )
    return [swarm["NodeID"] if ref == "self" else ref for ref in refs]


def cmd_node_inspect(ns: argparse.Namespace) -> int:
    refs = _node_refs(ns, ns.nodes)
    if ns.pretty:
        from overlaynet.cli import info_text  # it imports this module

        return info_text.cmd_node_inspect_pretty(ns, refs)
    from overlaynet.cli import node_doc  # it imports this module

    return node_doc.cmd_node_inspect(ns, refs)


def cmd_node_update(ns: argparse.Namespace) -> int:
    """`node update [--availability …] [--label-add K[=V]]… [--label-rm K]…`."""
    if ns.availability is None and not ns.label_add and not ns.label_rm:
        raise CliError("node update needs --availability, --label-add or --label-rm")
    call(
        ns,
        "node.update",
        node=ns.node,
        availability=ns.availability,
        label_add=_key_values(ns.label_add, "label", bare=True),
        label_rm=ns.label_rm or [],
    )
    print(ns.node)
    return 0


def cmd_node_role(ns: argparse.Namespace) -> int:
    op = "node.promote" if ns.verb == "promote" else "node.demote"
    role = "manager" if ns.verb == "promote" else "worker"

    def change(n: str) -> Any:
        call(ns, op, node=n)
        verb = "promoted to" if role == "manager" else "demoted to"
        print(f"Node {n} {verb} a {role} in the swarm.")

    return _each(ns.nodes, change)[1]


def cmd_node_rm(ns: argparse.Namespace) -> int:
    return _each(ns.nodes, lambda n: call(ns, "node.rm", node=n, force=ns.force), echo=True)[1]


def _utc(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def cmd_node_ca(ns: argparse.Namespace) -> int:
    """`node ca`: each node's credential, as the managers know it."""
    rows = call(ns, "node.ca")
    if ns.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    out = [
        [
            r["id"],
            r["hostname"],
            r["role"],
            r["fingerprint"][:16] if r["fingerprint"] else "-",
            _utc(r["issued"]),
            r["status"] if r["revoked"] is None else f"{r['status']} {_utc(r['revoked'])}",
        ]
        for r in rows
    ]
    print(table(["ID", "HOSTNAME", "ROLE", "FINGERPRINT", "ISSUED", "STATUS"], out))
    return 0


def cmd_node_revoke(ns: argparse.Namespace) -> int:
    return _each(ns.nodes, lambda n: call(ns, "node.revoke", node=n), echo=True)[1]


def cmd_gossip_members(ns: argparse.Namespace) -> int:
    rows = [
        [m["name"], m["addr"], m["state"], str(m["incarnation"])]
        for m in call(ns, "gossip.members")
    ]
    print(table(["NODE", "ADDRESS", "STATE", "INCARNATION"], rows))
    return 0


def cmd_gossip_endpoints(ns: argparse.Namespace) -> int:
    rows = [
        [short_id(r["key"]), r["name"], r["ip"], r["mac"], r["host"], r["owner"], str(r["ltime"])]
        for r in call(ns, "gossip.endpoints", network=ns.network)
    ]
    headers = ["ENDPOINT", "NAME", "IP", "MAC", "HOST", "OWNER", "LAMPORT"]
    print(table(headers, rows))
    return 0


# ---- lab -----------------------------------------------------------------------------------


def cmd_lab_up(ns: argparse.Namespace) -> int:
    from overlaynet import lab

    name = ns.name or ns.lab
    try:
        hosts = lab.up(name, ns.hosts, swarm=ns.swarm, progress=sys.stdout.isatty())
        client = lab.add_client(name) if ns.client else None
    except (lab.LabError, BadName, ApiError) as e:
        raise CliError(str(e)) from None
    rows = [[name, h.name, h.ip, "up"] for h in hosts]
    if client is not None:
        rows.append([name, "client", lab.CLIENT_IP, f"none (ip netns exec {client} …)"])
    print(table(["LAB", "HOST", "ADDRESS", "AGENT"], rows))
    return 0


def cmd_lab_down(ns: argparse.Namespace) -> int:
    from overlaynet.cli import lab_down

    return lab_down.run(ns.name or ns.lab, ns.all)


def cmd_lab_ls(ns: argparse.Namespace) -> int:
    from overlaynet import lab

    rows = []
    for name in lab.all_labs():
        for st in lab.status(name) or [lab.HostStatus(name, "-", "-", None, False)]:
            health = "healthy" if st.healthy else ("no agent" if st.pid is None else "unhealthy")
            rows.append([name, st.host, st.ip, str(st.pid or "-"), health])
    print(table(["LAB", "HOST", "ADDRESS", "AGENT PID", "HEALTH"], rows))
    for name in lab.all_labs():
        lab_impair.print_active(name)
    return 0


def cmd_lab_capture(ns: argparse.Namespace) -> int:
    """Frames on the lab's underlay, a host's port or in a container, decoded layer by layer."""
    from pathlib import Path

    from overlaynet.lab import capture

    name = ns.name or ns.lab
    write = Path(ns.write) if ns.write else None
    try:
        return capture.run(
            name, ns.on, ns.container, ns.host, ns.count, ns.filter, ns.seconds, write
        )
    except (capture.CaptureError, OSError) as e:
        raise CliError(str(e)) from None


def cmd_lab_demo(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from overlaynet.lab import demo

    return demo.run(ns.name or "demo", keep=ns.keep, out=Path(ns.out) if ns.out else None)


def cmd_lab_ui(ns: argparse.Namespace) -> int:
    """A live web view of the lab: serves until Ctrl-C, printing its URL (overlaynet.web)."""
    from overlaynet.web import server

    try:
        return server.run(ns.ui_lab or ns.lab, ns.port, ns.bind, ns.allow_actions)
    except server.NoSuchLab as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot serve on {ns.bind}:{ns.port}: {e}") from None


def cmd_lab_graph(ns: argparse.Namespace) -> int:
    """A picture of the lab: hosts, underlay, networks, bridges, containers, VTEPs, tunnels."""
    from pathlib import Path

    from overlaynet.lab import graph

    name = ns.name or ns.lab
    try:
        fmt = "dot" if ns.output == "-" else graph.output_format(ns.output)
        topology = graph.collect(name)
        text = graph.to_dot(topology)
        if ns.output == "-":
            print(text, end="")
        else:
            graph.write(text, Path(ns.output), fmt)
    except (graph.GraphError, BadName) as e:
        raise CliError(str(e)) from None
    for problem in graph.problems(topology):
        print(f"overlaynet: {problem}", file=sys.stderr)
    if ns.output != "-":
        print(ns.output)
    return 0


# ---- parser --------------------------------------------------------------------------------


def _container_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-d", "--detach", action="store_true", help="run in the background, print the ID"
    )
    p.add_argument(
        "-i", "--interactive", action="store_true", help="keep stdin attached (open with -d)"
    )
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("--name", help="the container's name")
    p.add_argument("-h", "--hostname", help="the container's host name (default: its short ID)")
    p.add_argument("--network", "--net", help="network to connect to (default: bridge)")
    p.add_argument("--ip", help="IPv4 address on that network")
    p.add_argument("--network-alias", action="append", help="extra DNS name on that network")
    p.add_argument("-e", "--env", action="append", help="environment variable KEY=VALUE")
    p.add_argument("-l", "--label", action="append", help="set metadata KEY=VALUE")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    health_flags.add_health_flags(p)
    p.add_argument("image", help="image from the catalog (`overlaynet image ls`)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command (default: the image's)")
    p.set_defaults(func=cmd_run)


def _add_container_verbs(sub: Any, top_level: bool) -> None:
    # docker's `run -h` is --hostname: help is --help only, as in docker.
    run = sub.add_parser("run", help="create and start a container", add_help=False)
    run.add_argument("--help", action="help", help="show this help message and exit")
    _container_run_args(run)
    for verb in ("ls", "ps", "list") if not top_level else ("ps",):
        p = sub.add_parser(verb, help="list containers")
        p.add_argument("-a", "--all", action="store_true", help="show all containers")
        p.add_argument(
            "-n", "--last", type=int, default=-1, help="show the n last created containers"
        )
        p.add_argument("-l", "--latest", action="store_true", help="show the latest created")
        _list_options(p, "containers", "status=running", no_trunc=True)
        p.set_defaults(func=cmd_ps)
    p = sub.add_parser("start", help="start stopped containers")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("stop", help="stop running containers")
    p.add_argument("-t", "--time", type=int, default=10, help="seconds before SIGKILL")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("containers", nargs="*")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append")
    p.add_argument("container")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("inspect", help="low-level information as JSON")
    p.add_argument("-f", "--format", help="Go template, e.g. '{{.NetworkSettings.Networks}}'")
    p.add_argument("objects", nargs="+")
    p.set_defaults(func=cmd_inspect, kind=None if top_level else "container")
    p = sub.add_parser("top", help="processes of a container")
    p.add_argument("container")
    p.set_defaults(func=cmd_top)
    p = sub.add_parser("logs", help="output of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the container ends")
    p.add_argument(
        "-n", "--tail", default=logtail.ALL, help="lines to show from the end (default: all)"
    )
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)


def _list_options(p: argparse.ArgumentParser, what: str, example: str, no_trunc: bool) -> None:
    """docker's -q, --no-trunc, -f/--filter and --format of a list command."""
    p.add_argument("-q", "--quiet", action="store_true", help=f"only display {what}' IDs")
    if no_trunc:
        p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        type=_filter_arg,
        metavar="KEY=VALUE",
        help=f"filter output (e.g. '{example}'); repeat a key for OR, mix keys for AND",
    )
    p.add_argument(
        "--format",
        help="'table', 'table TEMPLATE', 'json' or a Go TEMPLATE such as '{{.ID}}\\t{{.Name}}'",
    )


def build_parser() -> argparse.ArgumentParser:
    p = DockerStyleParser(
        prog="overlaynet",
        description="Docker-style container networking, built in the open.",
    )
    p.add_argument(
        "-H",
        "--host",
        default=os.environ.get("OVERLAYNET_HOST"),
        help="host whose agent to talk to (env OVERLAYNET_HOST; default node1)",
    )
    p.add_argument(
        "--lab",
        default=os.environ.get("OVERLAYNET_LAB", "default"),
        help="lab name (env OVERLAYNET_LAB; default 'default'; 'none' on a real host)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    net = sub.add_parser("network", help="manage networks").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = net.add_parser("create", help="create a network")
    c.add_argument("-d", "--driver", default="bridge")
    c.add_argument("--subnet")
    c.add_argument("--gateway")
    c.add_argument("--ip-range", help="allocate container addresses from this sub-range")
    c.add_argument("-o", "--opt", action="append", help="driver option KEY=VALUE")
    c.add_argument("--label", action="append")
    c.add_argument("--internal", action="store_true")
    c.add_argument("--attachable", action="store_true")
    c.add_argument("name")
    c.set_defaults(func=cmd_network_create)
    for verb in ("ls", "list"):
        c = net.add_parser(verb, help="list networks")
        _list_options(c, "networks", "driver=bridge", no_trunc=True)
        c.set_defaults(func=cmd_network_ls)
    c = net.add_parser("inspect", help="network details as JSON")
    c.add_argument("-f", "--format")
    c.add_argument("networks", nargs="+")
    c.set_defaults(func=cmd_network_inspect)
    for verb in ("rm", "remove"):
        c = net.add_parser(verb, help="remove networks")
        c.add_argument("networks", nargs="+")
        c.set_defaults(func=cmd_network_rm)
    c = net.add_parser("connect", help="connect a container to a network")
    c.add_argument("--ip")
    c.add_argument("--alias", action="append")
    c.add_argument("network")
    c.add_argument("container")
    c.set_defaults(func=cmd_network_connect)
    c = net.add_parser("peer", help="overlay: add or remove a peer host (static, no gossip)")
    c.add_argument("action", choices=["add", "rm"])
    c.add_argument("network")
    c.add_argument("peer_host", metavar="HOST_IP", help="the peer's underlay address")
    c.set_defaults(func=cmd_network_peer)
    c = net.add_parser("fdb", help="overlay: add or remove a remote endpoint by hand")
    c.add_argument("action", choices=["add", "rm"])
    c.add_argument("network")
    c.add_argument("mac", help="the remote endpoint's MAC address")
    c.add_argument("vtep", nargs="?", metavar="HOST_IP", help="the host it lives behind (add)")
    c.add_argument("--ip", help="its IP address: ARP for it is answered locally")
    c.set_defaults(func=cmd_network_fdb)
    c = net.add_parser("vtep", help="overlay: the VTEP's peers, FDB, ARP answers and counters")
    c.add_argument("network")
    c.set_defaults(func=cmd_network_vtep)
    c = net.add_parser("disconnect", help="disconnect a container from a network")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("network")
    c.add_argument("container")
    c.set_defaults(func=cmd_network_disconnect)

    cont = sub.add_parser("container", help="manage containers").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    _add_container_verbs(cont, top_level=False)
    _add_container_verbs(sub, top_level=True)

    img = sub.add_parser("image", help="the image catalog").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    for verbs, parent in ((("ls", "list"), img), (("images",), sub)):
        for verb in verbs:
            c = parent.add_parser(verb, help="list the images of the catalog")
            _list_options(c, "images", "reference=alpine", no_trunc=True)
            c.set_defaults(func=cmd_image_ls)

    sw = sub.add_parser("swarm", help="manage the swarm").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = sw.add_parser("init", help="make this host a swarm's first manager")
    c.add_argument("--advertise-addr", help="eth0 or IP[:PORT] other hosts reach this one at")
    c.add_argument("--ingress-subnet", help="the routing mesh's subnet (default 10.255.0.0/16)")
    c.add_argument(
        "--force-new-cluster",
        action="store_true",
        help="on a manager that lost its quorum for good: keep the state, lead a new cluster",
    )
    c.set_defaults(func=cmd_swarm_init)
    c = sw.add_parser("join", help="join a swarm as a worker or a manager")
    c.add_argument("--token", required=True)
    c.add_argument("--advertise-addr", help="eth0 or IP other hosts reach this one at")
    c.add_argument("remote", metavar="HOST:PORT", help="a manager, e.g. 192.168.0.11:2377")
    c.set_defaults(func=cmd_swarm_join)
    c = sw.add_parser("join-token", help="print the command that joins a worker or manager")
    c.add_argument("-q", "--quiet", action="store_true", help="only the token")
    c.add_argument("--rotate", action="store_true", help="replace the token (the old one stops)")
    c.add_argument("role", choices=["worker", "manager"])
    c.set_defaults(func=cmd_swarm_join_token)
    c = sw.add_parser("leave", help="leave the swarm")
    c.add_argument("-f", "--force", action="store_true")
    c.set_defaults(func=cmd_swarm_leave)

    node = sub.add_parser("node", help="manage swarm nodes").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    for verb in ("ls", "list"):
        c = node.add_parser(verb, help="list nodes")
        _list_options(c, "nodes", "role=manager", no_trunc=False)
        c.set_defaults(func=cmd_node_ls)
    c = node.add_parser("inspect", help="node details as JSON")
    c.add_argument("-f", "--format")
    c.add_argument("--pretty", action="store_true", help="docker's human-friendly text")
    c.add_argument("nodes", nargs="+")
    c.set_defaults(func=cmd_node_inspect)
    c = node.add_parser("update", help="change a node's availability or labels")
    c.add_argument("--availability", choices=["active", "pause", "drain"])
    c.add_argument("--label-add", action="append", metavar="KEY[=VALUE]")
    c.add_argument("--label-rm", action="append", metavar="KEY")
    c.add_argument("node")
    c.set_defaults(func=cmd_node_update)
    for verb in ("promote", "demote"):
        c = node.add_parser(verb, help=f"{verb} nodes")
        c.add_argument("nodes", nargs="+")
        c.set_defaults(func=cmd_node_role)
    c = node.add_parser("rm", help="remove nodes from the swarm")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("nodes", nargs="+")
    c.set_defaults(func=cmd_node_rm)
    c = node.add_parser("ca", help="node credentials: list, or `revoke NODE`")
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=cmd_node_ca)
    revoke = c.add_subparsers(dest="ca_verb", metavar="VERB").add_parser(
        "revoke", help="refuse nodes' credentials from now on (they stay listed as revoked)"
    )
    revoke.add_argument("nodes", nargs="+")
    revoke.set_defaults(func=cmd_node_revoke)

    gossip = sub.add_parser("gossip", help="the control plane's view").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = gossip.add_parser("members", help="SWIM members as this host sees them")
    c.set_defaults(func=cmd_gossip_members)
    c = gossip.add_parser("endpoints", help="a network's endpoint table (who lives where)")
    c.add_argument("network")
    c.set_defaults(func=cmd_gossip_endpoints)

    p_info = sub.add_parser("info", help="the agent's view of its host")
    p_info.add_argument(
        "-f", "--format", help="'json' or a Go template, e.g. '{{.Swarm.LocalNodeState}}'"
    )
    p_info.set_defaults(func=cmd_info)
    from overlaynet.cli import views_cmds  # imports this module: registered once it is loaded

    views_cmds.register(sub)
    from overlaynet.cli import events_cmd  # imports this module: registered once it is loaded

    events_cmd.register(sub)
    from overlaynet.cli import prune  # imports this module: registered once it is loaded

    prune.register(sub, cont, net)
    from overlaynet.cli import trace_cmd  # imports this module: registered once it is loaded

    trace_cmd.register(sub)
    c = sub.add_parser("version", help="client and agent versions")
    c.add_argument("-f", "--format", help="Go template, e.g. '{{.Server.Version}}'")
    c.set_defaults(func=cmd_version)
    c = sub.add_parser("completion", help="print a shell completion script")
    c.add_argument("shell", choices=["bash"], help="the shell to complete for")
    c.set_defaults(func=cmd_completion)
    host = sub.add_parser("host", help="under the hood of one host").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = host.add_parser("show", help="links, bridge ports, addresses and routes")
    c.set_defaults(func=cmd_host_show)

    lab = sub.add_parser("lab", help="the one-machine lab").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = lab.add_parser("up", help="build a lab and start its agents")
    c.add_argument(
        "--hosts", type=int, default=3,
        help="hosts in the lab (20+: gossip probes every 1 s, 64+: every 2 s; lab up prints "
        "the failure detection time it trades)",
    )  # fmt: skip
    c.add_argument("--name", help="lab name (default: --lab)")
    c.add_argument("--swarm", action="store_true", help="node1 inits a swarm, the rest join")
    c.add_argument(
        "--client",
        action="store_true",
        help="also a namespace on the underlay that is no host (onet-LAB-client), to reach "
        "published ports from outside the swarm",
    )
    c.set_defaults(func=cmd_lab_up)
    c = lab.add_parser("down", help="stop a lab's agents and remove all it made")
    c.add_argument("--name", help="lab name (default: --lab)")
    c.add_argument("--all", action="store_true", help="every lab on this machine")
    c.set_defaults(func=cmd_lab_down)
    c = lab.add_parser("ls", help="labs, hosts, agents and their health")
    c.set_defaults(func=cmd_lab_ls)
    c = lab.add_parser("capture", help="capture underlay frames and decode them layer by layer")
    c.add_argument("--name", help="lab name (default: --lab)")
    c.add_argument("--on", default="underlay", help="'underlay' (the lab's switch) or a host")
    c.add_argument("--container", help="capture on this container's eth0 (inner frames)")
    c.add_argument(
        "-H", "--host", default=argparse.SUPPRESS, help="the --container's host (default: any)"
    )
    c.add_argument("-c", "--count", type=int, default=8, help="frames to capture")
    c.add_argument(
        "--filter", help="tcpdump filter (default 'udp port 4789'; in a container: every frame)"
    )
    c.add_argument("--seconds", type=float, default=10.0, help="give up after (at most 30)")
    c.add_argument("-w", "--write", metavar="FILE", help="write the frames to a pcap file")
    c.set_defaults(func=cmd_lab_capture)
    c = lab.add_parser("demo", help="walk through the tutorial on a fresh lab")
    c.add_argument("--name", help="lab name (default: demo)")
    c.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    c.add_argument(
        "--out", metavar="DIR", help="folder for each part's picture (default ./overlaynet-demo)"
    )
    c.set_defaults(func=cmd_lab_demo)
    c = lab.add_parser(
        "ui", help="serve a live web view of the lab (read-only unless --allow-actions)"
    )
    c.add_argument("--lab", "--name", dest="ui_lab", help="lab name (default: the global --lab)")
    c.add_argument("--port", type=int, default=8080, help="TCP port (0: any free one)")
    c.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback)")
    c.add_argument(
        "--allow-actions",
        action="store_true",
        help="let the page capture underlay packets and ping between containers",
    )
    c.set_defaults(func=cmd_lab_ui)
    c = lab.add_parser("graph", help="draw the lab's hosts, networks, VTEPs and tunnels")
    c.add_argument("--name", help="lab name (default: --lab)")
    c.add_argument(
        "-o",
        "--output",
        default="topology.svg",
        help="FILE.svg, FILE.png (graphviz) or FILE.dot; '-' prints the DOT text",
    )
    c.set_defaults(func=cmd_lab_graph)
    lab_impair.register(lab)

    from overlaynet.cli import service  # imports this module: registered once it is loaded

    service.register(sub)
    return p


# Verbs that create or remove kernel objects themselves rather than asking an agent.
_NEEDS_ROOT = (cmd_lab_up, cmd_lab_down, cmd_lab_capture, cmd_lab_demo, *lab_impair.NEEDS_ROOT)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.func in _NEEDS_ROOT and os.geteuid() != 0:
        print(
            f"overlaynet: `{parser.prog} {ns.command} {ns.verb}` needs root (it builds network "
            "namespaces): run it with sudo",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        return int(ns.func(ns))
    except CliError as e:
        print(e, file=sys.stderr)
        return e.status
    except PermissionError as e:
        # One line, not a traceback: most verbs need root (namespaces, the agents' sockets).
        print(
            f"overlaynet: permission denied: {e} (overlaynet needs root: try sudo)", file=sys.stderr
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
