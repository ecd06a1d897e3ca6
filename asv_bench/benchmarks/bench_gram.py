"""asv benchmarks of LaplexGram's likelihood and of its peers (``python -m laplexops bench
--gram`` prints the same rows as ratios).

The anchors are sorted (the peers need them sorted) and the plan is built in ``setup``; every timed
likelihood makes a new Gram on that plan with ``with_params``, so the factorisation is timed with
it, as celerite2's ``compute`` is with its ``log_likelihood``.
"""

import numpy as np

import laplexops as lx
from laplexops._gram_bench import tinygp_value_and_grad

SIZES = [10**4, 10**5, 10**6]


def _problem(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, n / 10, n))
    return t, rng.standard_normal(n), rng.standard_normal((8, n))


class GramSuite:
    params = [SIZES]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.t, self.y, self.Y8 = _problem(n)
        self.gram = lx.LaplexGram(self.t, rate=1.0, noise=0.1)
        self.gram.nll(self.y)  # the plan; the kernels compiled
        self.gram.nll_and_gradient(self.Y8)
        self.cached = self.gram.with_params()
        self.cached.logdet()

    def time_nll_batch1(self, n):
        self.gram.with_params().nll(self.y)

    def time_nll_batch8(self, n):
        self.gram.with_params().nll(self.Y8)

    def time_nll_and_gradient_batch1(self, n):
        self.gram.with_params().nll_and_gradient(self.y)

    def time_nll_and_gradient_batch8(self, n):
        self.gram.with_params().nll_and_gradient(self.Y8)

    def time_solve_cached(self, n):
        self.cached.solve(self.y)

    def time_sample_cached(self, n):
        self.cached.sample(1, seed=0)

    def peakmem_nll_and_gradient_batch8(self, n):
        self.gram.with_params().nll_and_gradient(self.Y8)


class GramPeerSuite:
    """celerite2's ``RealTerm``: compute + log_likelihood (skipped without celerite2)."""

    params = [SIZES]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.t, self.y, _ = _problem(n)
        try:
            import celerite2
        except ImportError:
            raise NotImplementedError("celerite2 is not installed") from None
        self.gp = celerite2.GaussianProcess(celerite2.terms.RealTerm(a=1.0, c=1.0))

    def time_celerite2_compute_log_likelihood(self, n):
        self.gp.compute(self.t, diag=0.1, quiet=True)
        self.gp.log_likelihood(self.y)


class TinygpSuite:
    """tinygp's jitted quasiseparable ``Exp`` value and gradient (skipped without tinygp)."""

    params = [SIZES]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        t, y, _ = _problem(n)
        try:
            self.tinygp = tinygp_value_and_grad(t, y)
        except ImportError:
            raise NotImplementedError("tinygp is not installed") from None

    def time_tinygp_value_and_grad(self, n):
        self.tinygp()
