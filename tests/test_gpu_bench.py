"""``bench --gpu`` end to end on a NumPy stand-in for CuPy (the Numba backend computes).

A real run needs a GPU; this runs the bench's own logic (rows, goals, the 1e9 step's data, moves
and memory accounting, the JSON file) at small sizes so that a mistake there is found on the CPU,
not on a GPU.
"""

from __future__ import annotations

import json
import types

import numpy as np

from laplexops import _gpu_bench


class _Pool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


class _MemoryHook:
    name = None

    def __enter__(self):
        assert self.name, "a CuPy memory hook needs a name"
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy():
    pool = _Pool()
    device = types.SimpleNamespace(id=0, synchronize=lambda: None)
    cuda = types.SimpleNamespace(
        Device=lambda *a: device,
        MemoryHook=_MemoryHook,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"stand-in"}),
    )
    fake = types.SimpleNamespace(
        __version__="stand-in",
        cuda=cuda,
        random=types.SimpleNamespace(default_rng=np.random.default_rng),
        get_default_memory_pool=lambda: pool,
    )
    names = ("fft", "empty", "empty_like", "sort", "argsort", "concatenate", "unique", "float32")
    for name in (*names, "nextafter", "abs"):
        setattr(fake, name, getattr(np, name))
    return fake


def test_bench_gpu_table_and_json(tmp_path, capsys, monkeypatch):
    out = tmp_path / "gpu.json"
    # NumPy arrays have no device memory to hand to cudaMemcpy: a host copy stands in
    monkeypatch.setattr(
        _gpu_bench,
        "device_copy_seconds",
        lambda cupy, nbytes: _gpu_bench.best_of(lambda: np.ones(nbytes, np.uint8).copy()),
    )
    code = _gpu_bench.gpu_bench(
        log2n=11,
        seed=1,
        json_path=str(out),
        huge=True,
        tests=False,
        huge_n=3000,
        cupy=_fake_cupy(),
        gram_n=(3000, 5000, 2000),
    )
    text = capsys.readouterr().out
    assert code in (0, 1)  # goals are for a GPU; the stand-in only has to run them all
    report = json.loads(out.read_text())
    cases = [r["case"] for r in report["results"]]
    assert len(cases) == 20, cases
    assert cases[-6].startswith("Gram nll_and_gradient, n = 3,000, batch 8")
    assert cases[-4].startswith("Gram vs Numba") and report["results"][-4]["met"]
    assert cases[-3].startswith("fresh step m = n = 3,000")
    assert cases[-2].startswith("training step m = n = 3,000, pool emptied (")
    assert cases[-1].startswith("training step m = n = 3,000, training loop (")
    assert report["results"][-2]["met"] is None and report["results"][-1]["met"] is not None
    for r in report["results"]:
        assert r["seconds"] > 0, r
        assert r["case"] in text
    assert ("PASS" in text) == (code == 0)


def test_ulp_moves(rng):
    a = (rng.random(30_000) * 1e6).astype(np.float32)
    moved = _gpu_bench._ulp_moves(np, rng, a)
    steps = moved.view(np.int32) - a.view(np.int32)  # positive floats: ulps are integer steps
    assert moved.dtype == a.dtype
    assert set(np.unique(steps)) == {-1, 0, 1}
    assert 0.3 < np.mean(steps == 0) < 0.37
