"""The single-host TCP launcher: party 0, party 1 and the dealer as three local processes.

The processes talk mutual TLS 1.3 on loopback with a fresh in-memory deployment
(:func:`veil.comm.credentials.ephemeral`) and a random session id per run; each
process receives only its own role's key and its own private input (a process
started by ``fork`` would inherit both inputs, so private inputs require
``spawn`` or ``forkserver``). The launcher collects results over pipes, relays
progress reports, terminates a participant that stalls, and reports the
participant to blame (:func:`veil.mpc.launch.blame`).

The job must be importable by the launched processes: a module-level function,
and a script that calls ``veil.run(transport="tcp")`` must do so under
``if __name__ == "__main__":`` (the processes import the script); a call
without the guard is detected before anything starts.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import multiprocessing as mp
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

import torch

from veil.comm.credentials import ROLES, Credentials, ephemeral
from veil.comm.tcp import listen
from veil.mpc.launch import (
    DEALER,
    NAMES,
    Failure,
    Job,
    Options,
    PartyFailedError,
    Progress,
    blame,
    failure_priority,
    tcp_participant,
)
from veil.sharing.material import registered_modules

#: Seconds the processes get to start (imports, fork server) on top of the connect timeout.
_START_S = 60.0
_GUARD_HINT = ("put the code that calls veil.run(transport='tcp') under "
               "`if __name__ == \"__main__\":` — the launched processes import your script, "
               "and an unguarded call would launch again from each of them")


def _default_start_method() -> str:
    # "fork" is fast but unsafe once this process has used OpenMP/BLAS thread pools: a forked
    # child that enters one spins forever (libgomp is not fork-safe). A fork server is a clean
    # process started once, which then forks the participants quickly.
    if "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


def _context(method: str):
    ctx = mp.get_context(method)
    if method == "forkserver":
        # Preloading also hands this process's sys.path to the server (so jobs defined in
        # scripts and test modules can be unpickled there).
        ctx.set_forkserver_preload(["veil.mpc.runtime", "veil.mpc.launch_tcp"])
    return ctx


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]


def check_main_guard(method: str) -> None:
    """Refuse a launch from a script's top level without the ``__main__`` guard.

    Raises ``RuntimeError`` with what to do, instead of the launched processes each
    re-running the script and dying during their start-up.
    """
    frame = sys._getframe()
    while frame is not None:
        if frame.f_globals.get("__name__") == "__mp_main__":
            raise RuntimeError(f"veil.run was called while a launched process imported "
                               f"the main script: {_GUARD_HINT}")
        frame = frame.f_back
    if method == "fork":
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return
    frame = sys._getframe()
    while frame is not None and not (frame.f_code.co_name == "<module>"
                                     and frame.f_globals is main.__dict__):
        frame = frame.f_back
    if frame is None:
        return
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) \
                and node.lineno <= line <= (node.end_lineno or node.lineno):
            return
    raise RuntimeError(f"{path}, line {line}: {_GUARD_HINT}")


def _child(rank: int, conn, job: Job | None, args: tuple, kwargs: Mapping, options: Options,
           session: bytes, credentials: Credentials, with_progress: bool) -> None:
    lock = threading.Lock()

    def send(msg: tuple) -> None:
        # Plain pickle between the launcher and its own children (never between parties):
        # torch's multiprocessing reducer would share tensors by file descriptor, which dies
        # with this process.
        with lock:
            conn.send_bytes(pickle.dumps(msg))

    try:
        torch.set_num_threads(options.threads or 1)
        for module in options.modules:  # before the others may connect
            importlib.import_module(module)
        listener = listen(("127.0.0.1", 0)) if rank < DEALER else None
        send(("port", listener.getsockname()[1] if listener else 0))
        # The others may still be starting (the launcher bounds that); a dead launcher
        # shows up as end of file at once.
        if not conn.poll((options.connect_timeout or options.timeout) + _START_S):
            raise TimeoutError("the launcher never sent the addresses")
        addresses = conn.recv()
        progress = (lambda done, total: send(("progress", done, total))) if with_progress \
            else None
        result = tcp_participant(rank, addresses, job, args, kwargs, options, session,
                                 credentials, listener, progress)
        send(("ok", result))
    except BaseException as exc:  # noqa: BLE001 - reported to the launcher
        try:
            send(("error", type(exc).__name__, str(exc), traceback.format_exc(),
                  failure_priority(rank, exc)))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def launch_tcp(job: Job, args: Mapping[int, tuple], kwargs: Mapping, options: Options,
               start_method: str | None = None, progress: Progress | None = None,
               private_inputs: bool = False) -> list:
    """Run the job in three local processes over TLS on loopback; ``[result0, result1]``."""
    method = start_method or _default_start_method()
    if private_inputs and method == "fork":
        raise ValueError("private inputs need start_method 'spawn' or 'forkserver': a forked "
                         "process inherits the launcher's memory, both inputs included")
    check_main_guard(method)
    ctx = _context(method)
    session = os.urandom(16)
    creds = ephemeral()  # a fresh deployment per run; each process gets only its own key
    # Loopback set-up needs no long timeout, but process start-up on a busy machine may.
    options = dataclasses.replace(
        options, modules=tuple(registered_modules()),
        connect_timeout=options.connect_timeout or max(options.timeout, 30.0))
    pipes, procs = [], []
    for rank in (0, 1, DEALER):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(rank, child, job if rank < DEALER else None,
                                              args.get(rank, ()), kwargs, options, session,
                                              creds[ROLES[rank]], progress is not None),
                        name=f"veil-{NAMES[rank].replace(' ', '-')}", daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    try:
        return _supervise(pipes, procs, options, progress, method)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        for c in pipes:
            c.close()


def _startup_failure(rank: int, proc, method: str) -> PartyFailedError:
    msg = f"its process exited with code {proc.exitcode} during start-up"
    main = sys.modules.get("__main__")
    if method != "fork" and getattr(main, "__file__", None):
        msg += f" (if {main.__file__} calls veil.run at its top level: {_GUARD_HINT})"
    return PartyFailedError(rank, msg)


def _supervise(pipes, procs, options: Options, progress: Progress | None, method: str) -> list:
    start_deadline = time.monotonic() + (options.connect_timeout or options.timeout) + _START_S
    ports: list[int] = []
    for rank, conn in enumerate(pipes):
        while not conn.poll(0.05):
            if not procs[rank].is_alive():
                raise _startup_failure(rank, procs[rank], method)
            if time.monotonic() > start_deadline:
                raise PartyFailedError(rank, "its process did not start in time")
        try:
            msg = pickle.loads(conn.recv_bytes())
        except EOFError:
            procs[rank].join(1)
            raise _startup_failure(rank, procs[rank], method) from None
        if msg[0] != "port":
            raise PartyFailedError(rank, f"{msg[1]}: {msg[2]}\n{msg[3]}")
        ports.append(msg[1])
    addresses = [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", "127.0.0.1:0"]
    for rank, conn in enumerate(pipes):
        try:
            conn.send(addresses)
        except OSError:
            procs[rank].join(1)
            raise _startup_failure(rank, procs[rank], method) from None
    results: dict[int, Any] = {}
    failures: dict[int, Failure] = {}
    order: list[int] = []
    pending = {0, 1, DEALER}
    first_failure: float | None = None
    while pending:
        for rank in sorted(pending):
            conn, proc = pipes[rank], procs[rank]
            if conn.poll(0.02):
                try:
                    msg = pickle.loads(conn.recv_bytes())
                except EOFError:
                    msg = ("error", "ProcessDied", f"exited with code {proc.exitcode}", "",
                           0)
                if msg[0] == "progress":
                    if progress is not None:
                        progress(msg[1], msg[2])
                    continue
                pending.discard(rank)
                if msg[0] == "ok":
                    results[rank] = msg[1]
                else:
                    failures[rank] = Failure(msg[4], msg[1], msg[2], msg[3])
                    order.append(rank)
            elif not proc.is_alive() and not conn.poll(0):
                pending.discard(rank)
                failures[rank] = Failure(0, "ProcessDied",
                                         f"process exited with code {proc.exitcode} without "
                                         "a result")
                order.append(rank)
        if failures and first_failure is None:
            first_failure = time.monotonic()
        if first_failure is not None and time.monotonic() - first_failure > options.grace_s:
            # The others fail fast when a peer dies; one still running is stuck (terminated
            # by the caller).
            break
    if failures:
        raise blame(failures, order, pending, options.timeout)
    return [results[0], results[1]]
