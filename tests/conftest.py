import fcntl
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, torch.get_num_threads()))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test`'s two workers share two cores: one thread each, and for every tool a test starts
    # (OpenMP threads that outnumber the cores spin against each other: slower, not faster)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
HAVE_FASHION = os.path.isfile(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="Fashion-MNIST is not installed "
                                   "(apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _alone_if_marked(request, tmp_path_factory):
    """`make test` runs the tests on two workers (pytest-xdist, one per core). A test marked
    ``alone`` asserts a speed measured in its own run (a latency within 5 % of its budget), which the
    other worker's load would bend: it runs with no other test running. A readers-writer lock over
    the workers' shared temporary folder: every test holds it shared, an ``alone`` test exclusive;
    the turnstile keeps a waiting ``alone`` test from being overtaken by the other worker's next
    tests. Without workers (a plain ``pytest``) there is nothing to wait for."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # one folder per session, the workers' parent
    alone = request.node.get_closest_marker("alone") is not None
    with open(shared / "dan-turnstile.lock", "a") as gate, open(shared / "dan-alone.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
