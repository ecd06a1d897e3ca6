"""The command line: ``python -m laplexops info``, ``demo``, ``bench`` and ``bench --gram``."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "laplexops", *args], capture_output=True, text=True, timeout=timeout
    )


def test_info():
    r = _run("info")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "laplexops" in r.stdout
    assert "numba" in r.stdout


@pytest.mark.parametrize(
    "extra", [[], ["--dtype", "float32", "--rate", "1+2j"]], ids=["float64", "float32-phased"]
)
def test_demo_passes(extra):
    r = _run("demo", "--n", "20000", *extra)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert r.stdout.strip(), "the demo printed nothing"
    assert "PASS" in r.stdout, out
    assert "FAIL" not in r.stdout, out


def test_unknown_command_fails():
    r = _run("no-such-command")
    assert r.returncode != 0


def test_bench_gpu_without_a_device_says_so():
    from laplexops.backends import available

    if "cupy" in available():
        pytest.skip("a GPU is present: bench --gpu would run in full")
    r = _run("bench", "--gpu")
    assert r.returncode == 2
    assert "needs CuPy and a CUDA device" in r.stderr


def test_bench_gram_prints_every_row(tmp_path):
    out = tmp_path / "gram.json"
    r = _run("bench", "--gram", "--n", "5000", "--seed", "3", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    for row in (
        "nll, batch 1",
        "nll, batch 8",
        "nll + gradient, batch 1",
        "nll + gradient, batch 8",
    ):
        assert row in r.stdout
    assert r.stdout.count("finite") == 6 and "NOT FINITE" not in r.stdout
    import json

    data = json.loads(out.read_text())
    assert len(data["results"]) >= 6 and len(data["float32"]) == 6
    assert all(v <= 1e-6 for v in data["float32"].values())


def test_bench_dask_prints_every_row(tmp_path):
    pytest.importorskip("distributed")
    pytest.importorskip("dask.dataframe")
    out = tmp_path / "dask.json"
    r = _run("bench", "--dask", "--n", "20000", "--chunks", "2", "--seed", "5", "--json", str(out))
    # small sizes are all overhead: the ratios may miss their goals (return code 1), not crash
    assert r.returncode in (0, 1), r.stdout + r.stderr
    for row in ("plan", "product in plan order", "product with routing"):
        assert f"  {row} " in r.stdout
    import json

    data = json.loads(out.read_text())
    assert data["partitions"] == 2 and data["error"] <= 1e-10  # one per worker thread
    assert all(v["dask"] > 0 and v["numba"] > 0 for v in data["rows"].values())


def test_bench_prints_every_row_with_its_goal(tmp_path):
    """``bench`` (the CPU products) at a small size: every row, the goals marked, the JSON file."""
    import json

    out = tmp_path / "bench.json"
    r = _run("bench", "--n", "20000", "--seed", "3", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    goals = {
        "fresh matvec m=n (sort included)": 1.0,
        "first matvec after a plan": 1.5,
        "cached matvec, random anchors": 1.0,
        "cached rmatvec, random anchors": 1.0,
        "gradient, random anchors": 2.5,
        "cached matvec, rate 1.0+1j": 1.3,
        "cached matvec, float32 data": 0.6,
        "cached matvec, sorted x = y": 0.3,
        "cached matvec, sorted x = y, float32": 0.6,
        "n = 100 matvec, 2 busy processes per core": 5.0,
        "cached matvec, each after a BLAS call": 1.5,
        "the same, n = 2e+04, OPENBLAS_THREAD_TIMEOUT=4": 1.5,
    }
    report = {row["case"]: row for row in json.loads(out.read_text())["results"]}
    for case, goal in goals.items():
        assert report[case]["goal"] == goal, case
        assert report[case]["seconds"] > 0 and report[case]["ratio"] > 0, case
        assert case in r.stdout


def test_training_step_reports_time_and_peak_memory():
    """``bench --huge``'s training step, at a small size: a fresh process, its times and its peak
    resident memory per anchor (at least the anchors, operand and plan it holds)."""
    from laplexops._load_bench import training_step

    step = training_step(50_000, "float32", seed=4)
    assert step["plan"] > 0 and step["step"] > 0
    assert step["peak"] > 2 * 50_000 * 4
    assert step["bytes_per_anchor"] == step["peak"] / 100_000


def test_best_of_pair_times_the_two_cases_in_turn():
    """The bench's paired timings: rounds of each case's calls back to back, in turn, and each
    case's fastest call."""
    import time

    from laplexops._timing import best_of_pair

    calls = []

    def slow():
        calls.append("slow")
        time.sleep(0.004)

    def fast():
        calls.append("fast")

    t_slow, t_fast = best_of_pair(slow, fast, rounds=2, per_round=3)
    assert calls == (["slow"] * 3 + ["fast"] * 3) * 2
    assert t_slow >= 0.004 > t_fast >= 0
