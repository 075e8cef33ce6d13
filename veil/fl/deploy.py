"""Flower's deployment engine on one machine: a SuperLink and SuperNodes as separate processes.

:func:`deploy` writes a Flower App (a ``pyproject.toml`` whose components are
``veil.fl.apps:server_app`` and ``veil.fl.apps:client_app`` and whose run config
is the :class:`~veil.fl.config.FLConfig`), starts ``flower-superlink`` and one
``flower-supernode`` per client (each with its ``partition-id``), submits the
run with ``flwr run`` and waits for the ServerApp's report. Every process
talks to the others over the network exactly as across machines.

On loopback the processes run with ``--insecure`` (plain HTTP/gRPC on
127.0.0.1). Across machines use TLS: start the SuperLink with
``--ssl-ca-certfile``, ``--ssl-certfile`` and ``--ssl-keyfile``, the SuperNodes with
``--root-certificates ca.crt`` instead of ``--insecure``, and set
``root-certificates`` instead of ``insecure = true`` in the Flower configuration
(``$FLWR_HOME/config.toml``); ``veil keys init`` makes a private CA and
certificates. SuperNode authentication: ``--enable-supernode-auth`` on the
SuperLink.

Example
-------
>>> from veil.fl import FLConfig, Task
>>> from veil.fl.deploy import deploy
>>> cfg = FLConfig(task=Task(model="mlp", dataset="digits", num_clients=3), rounds=2)
>>> report = deploy(cfg)                      # doctest: +SKIP
>>> len(report["rounds"])                     # doctest: +SKIP
2
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from veil.fl.config import FLConfig

REPORT_KEY = "veil.report"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def write_app(directory: Path, cfg: FLConfig, report: Path) -> Path:
    """Write the Flower App project for ``cfg`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    flat = dict(cfg.to_flat(), **{REPORT_KEY: str(report)})
    lines = [
        '[build-system]', 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', '',
        '[project]', 'name = "veil-fl"', 'version = "1.0.0"', 'dependencies = []', '',
        '[tool.hatch.build.targets.wheel]', 'packages = ["."]', '',
        '[tool.flwr.app]', 'publisher = "veil"', '',
        '[tool.flwr.app.components]', 'serverapp = "veil.fl.apps:server_app"',
        'clientapp = "veil.fl.apps:client_app"', '', '[tool.flwr.app.config]',
    ]
    lines += [f'"{k}" = {_toml_value(v)}' for k, v in flat.items()]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with {proc.returncode}: "
                               f"{log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the SuperLink did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def deploy(cfg: FLConfig, workdir: str | os.PathLike | None = None, timeout: float = 300.0,
           progress=None) -> dict:
    """Run ``cfg`` on a SuperLink and ``cfg.task.num_clients`` SuperNodes (separate processes).

    Returns the ServerApp's report (the same per-round history as
    :func:`veil.fl.simulate`, without the final arrays). Processes are stopped
    on return, on error and on timeout.
    """
    if cfg.aggregation == "secagg+":
        raise ValueError("the deployment runs Veil's message-API apps: use plain or two-server "
                         "aggregation (SecAgg+ needs the legacy client app)")
    work = Path(workdir or tempfile.mkdtemp(prefix="veil-fl-"))
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    report = work / "report.json"
    report.unlink(missing_ok=True)
    app = write_app(work / "app", cfg, report)
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    bindir = Path(sys.executable).parent
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, FLWR_HOME=str(home), PATH=path,
               OMP_NUM_THREADS="1")
    procs: list[subprocess.Popen] = []
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def start(name: str, args: list[str]) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process
        p = subprocess.Popen(args, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        link = start("superlink", [str(bindir / "flower-superlink"), "--insecure",
                                   "--host", "127.0.0.1", "--port", str(port),
                                   "--database", str(work / "state.db"),
                                   "--disable-runtime-dependency-installation"])
        _wait_port(port, link, 60, logs / "superlink.log")
        n = cfg.task.num_clients
        for i in range(n):
            start(f"supernode-{i}", [
                str(bindir / "flower-supernode"), "--insecure",
                "--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1",
                "--port", str(_free_port()),
                "--node-config", f"partition-id={i} num-partitions={n}"])
        # --stream keeps `flwr run` attached and copies the ServerApp's log into logs/run.log
        runner = start("run", [str(bindir / "flwr"), "run", str(app), "local", "--stream"])
        deadline = time.monotonic() + timeout
        while not report.exists():
            for p in procs:
                if p.poll() is not None and not (p is runner and p.returncode == 0):
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode} "
                                       f"(logs in {logs})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the federation did not finish within {timeout:.0f} s "
                                   f"(logs in {logs})")
            time.sleep(0.3)
        out = json.loads(report.read_text())
        out["workdir"] = str(work)
        return out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
