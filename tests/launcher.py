"""A process that has imported PyTorch once and forks a child for each tool a test runs.

Most of the tests run a tool as a user would (``python tools/<tool>.py ...``, :func:`helpers.run_tool`:
123 runs in the suite), and a fresh Python spends 3 s importing PyTorch before a tool reads its
first flag, 7 s for all a 1-epoch train imports, more while the other worker runs: about a third
of the suite's time on the 2-core machine it is sized for (11 minutes, 7.5 with this). This server
imports what the tools import (:data:`PRELOAD`: PyTorch, NumPy, the package...) and then, per
request, forks; the child becomes the tool's process as ``python <script>`` (or ``python -m``)
would have made it: its own working folder, environment, argv, ``sys.path[0]``, stdin from
/dev/null, stdout and stderr to the files the test reads, and the interpreter's own exit (status,
traceback, atexit handlers). The server never runs a tensor operation, so no thread pool is forked
half-way; it refuses to fork (the test then starts a fresh Python) when it has more than one thread
(NumPy's OpenBLAS starts one unless OMP_NUM_THREADS=1, as ``make test``'s workers set).

What a child does not get that a fresh Python would: a different environment at import time (the
caller starts a fresh Python whenever the environment differs from the server's in more than
variables nothing reads at import: ``helpers.Launcher._IGNORED``), and modules the server
imported are already in ``sys.modules`` (the ones a tool run imports anyway). A test about the
interpreter's start itself uses ``fresh=True``.

Protocol: one JSON request per line on stdin; on the file descriptor named by the first argument,
one JSON line ``{"pid": n}`` per started child (or ``{"refused": why}``), then ``{"status": code}``,
negative for a signal, as subprocess reports it.
"""

import gc
import json
import os
import signal
import sys


# What the tools import, most of it lazily (measured with -X importtime on a 1-epoch train): the
# package and PyTorch (3 s), TorchDynamo and SymPy (the FLOPs counter's shape propagation, 2 s),
# ONNX (the deploy check, 1.3 s), TensorBoard's writer. Not ONNX Runtime: importing it starts a thread.
PRELOAD = ("dan.cli", "torchvision", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "torch.export",
           "torch.utils.tensorboard", "onnx", "torch.onnx")


def serve() -> dict:
    """Answer requests until stdin closes (then exit); in a forked child, return its request."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional extra that is not installed: the child imports what it finds, as a fresh one
    gc.freeze()  # the collector leaves the preloaded objects alone: children do not copy their pages

    reply = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    for line in sys.stdin:
        req = json.loads(line)
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            print(json.dumps({"refused": f"{threads} threads"}), file=reply)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            reply.close()
            return req
        print(json.dumps({"pid": pid}), file=reply)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), file=reply)
    sys.exit(0)


def become(req: dict) -> None:
    """Turn this forked child into the process ``python <script> args`` started in ``cwd`` would be."""
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, req["stderr"], os.O_WRONLY | os.O_TRUNC)):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    # `python script.py` puts the script's folder first on the path, `python -m` the working folder
    sys.path[0] = os.path.dirname(os.path.abspath(req["argv"][0])) if req["script"] else os.getcwd()
    sys.argv = list(req["argv"])


def run_and_exit(req: dict) -> None:
    """Run the tool and end as the interpreter would (exit status, traceback, non-daemon threads
    joined, atexit handlers, streams flushed), but without tearing down the thousands of modules
    this process shares with the server: each teardown write copies a shared page, and those
    copies took a child 1.2 s at exit. (Objects still alive then are not finalized: a fresh
    Python does not promise that either, and a file left unflushed would fail a test, not pass it.)"""
    import atexit
    import runpy
    import threading

    code = 0
    try:
        if req["script"]:
            runpy.run_path(req["argv"][0], run_name="__main__")
        else:
            runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:  # as Python handles it: None is 0, an int is the status, else printed and 1
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code = -signal.SIGINT
    except BaseException:  # noqa: B902  uncaught: the traceback on stderr (sys.excepthook) and status 1
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # what Py_Finalize does first: wait for the non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code < 0:  # died of the signal, as Python does on an uncaught KeyboardInterrupt
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    request = serve()
    become(request)
    run_and_exit(request)
