"""Hypothesis profiles and shared fixtures of the laplexops test suite.

Profiles (select with the environment variable ``HYPOTHESIS_PROFILE``; default ``ci``):

- ``ci``: 100 examples per property test (over 2,000 generated cases per run of the suite);
- ``thorough``: 1,000 examples per property test;
- ``dev``: 15 examples per property test, for quick iterations.

``LAPLEXOPS_HYPOTHESIS_EXAMPLES=N`` overrides the number of examples per property test of whichever
profile is loaded. ``deadline`` is off everywhere: Numba compiles on first call.

At the end of a run the terminal summary reports how many Hypothesis cases were executed.
"""

from __future__ import annotations

import os
import re
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_override = os.environ.get("LAPLEXOPS_HYPOTHESIS_EXAMPLES", "").strip()
_override_n = int(_override) if _override else None

_common = dict(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)
for _name, _n in (("ci", 100), ("thorough", 1000), ("dev", 15)):
    settings.register_profile(_name, max_examples=_override_n or _n, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: the session's seed: ``LAPLEXOPS_TEST_SEED`` replays a run, else a fresh one (printed in the
#: header of every run, and with every failure of a test that draws from ``rng``)
SEED = int(os.environ.get("LAPLEXOPS_TEST_SEED", "").strip() or np.random.SeedSequence().entropy)


def pytest_report_header(config):
    return f"laplexops: random seed {SEED} (replay with LAPLEXOPS_TEST_SEED={SEED})"


@pytest.fixture
def rng(request):
    """A generator seeded from the session's seed and the test's id: new random data on every run,
    the same data for a test whenever its run is replayed with ``LAPLEXOPS_TEST_SEED``."""
    key = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng([SEED, key])


# ------------------------------------------------------------------ count Hypothesis cases
_PASSING = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
_counts = {"cases": 0, "tests": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "rng" in getattr(item, "fixturenames", ()):
        report.sections.append(("laplexops seed", f"replay with LAPLEXOPS_TEST_SEED={SEED}"))
    if call.when != "call":
        return
    stats = getattr(item, "hypothesis_statistics", None)
    if not stats:
        return
    found = _PASSING.findall(stats)
    if found:
        _counts["tests"] += 1
        # every phase (reuse, generate, shrink, ...) reports the cases it ran
        _counts["cases"] += sum(int(p) + int(f) for p, f, _ in found)


def _profile_name() -> str:
    getter = getattr(settings, "get_current_profile_name", None)
    return getter() if getter else os.environ.get("HYPOTHESIS_PROFILE", "ci")


def pytest_terminal_summary(terminalreporter):
    if _counts["tests"]:
        terminalreporter.write_line(
            f"hypothesis: {_counts['cases']} test cases executed by {_counts['tests']} property "
            f"tests (profile {_profile_name()}, "
            f"max_examples={settings.default.max_examples})"
        )


# ------------------------------------------------------------------ sanitizer runs
# tests/test_cuda_sanitizers.py waits for runs of minutes of CPU (tests/cuda_host/sanitizers.py):
# they start with the session, at a lower priority, and the tests that wait for them run last.


@pytest.fixture(scope="session")
def sanitizer_seed():
    """The sanitizer runs' seed, from the session's."""
    return int(np.random.default_rng([SEED, zlib.crc32(b"sanitizers")]).integers(2**63))


def _waits_for_a_sanitizer(item) -> bool:
    from cuda_host.sanitizers import TESTS

    return item.path.name == "test_cuda_sanitizers.py" and item.name in TESTS


def pytest_collection_modifyitems(items):
    waiting = [item for item in items if _waits_for_a_sanitizer(item)]
    if waiting:
        items[:] = [item for item in items if not _waits_for_a_sanitizer(item)] + waiting


@pytest.fixture(scope="session", autouse=True)
def _sanitizer_runs(request, tmp_path_factory, sanitizer_seed):
    """Start the sanitizer runs with the session when a selected test waits for them."""
    from cuda_host import sanitizers

    wanted = any(_waits_for_a_sanitizer(item) for item in request.session.items)
    if wanted and os.environ.get("LAPLEXOPS_HOST_KERNELS", "1") != "0":
        root = tmp_path_factory.mktemp("sanitizers")
        sanitizers.start_all(root, np.random.default_rng(sanitizer_seed))
    yield
    sanitizers.stop_all()


@pytest.fixture(scope="module")
def dask_client():
    """A client of a two-worker ``distributed.LocalCluster`` (one thread each, separate
    processes), as the Dask backend's acceptance tests specify; closed after the module."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
