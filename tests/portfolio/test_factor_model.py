"""The factor-model generator: fitted on the bundled real returns, PSD, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.portfolio.data import estimate, load_sp500
from qhybrid.portfolio.factor_model import calibrate, factor_problem, factor_universe


def test_the_calibration_comes_from_the_twenty_real_stocks() -> None:
    fit = calibrate(3)
    assert fit.stocks == 20 and fit.observations == 755
    assert 0.3 < fit.explained < 1.0
    assert fit.loading_std.shape == (3,) and np.all(fit.loading_std > 0)
    # The first factor is the market: the real stocks load on it far from zero, all alike.
    assert abs(fit.loading_mean[0]) > 2 * fit.loading_std[0]
    _, prices, _ = load_sp500()
    real = estimate(prices[-756:], estimator="sample")
    assert abs(fit.mean_return - float(real.expected_returns.mean())) < 5 * fit.alpha_std


def test_a_universe_is_positive_definite_and_resembles_the_real_one() -> None:
    names, mu, sigma = factor_universe(300, seed=1)
    assert len(names) == 300 and len(set(names)) == 300
    assert np.allclose(sigma, sigma.T)
    assert float(np.linalg.eigvalsh(sigma).min()) > 0
    _, prices, _ = load_sp500()
    real = estimate(prices[-756:], estimator="sample")
    ratio = float(np.median(np.diag(sigma)) / np.median(np.diag(real.covariance)))
    assert 0.3 < ratio < 3.0  # daily variances of the same order as the real stocks'
    again = factor_universe(300, seed=1)
    assert np.array_equal(again[1], mu) and np.array_equal(again[2], sigma)
    assert not np.array_equal(factor_universe(300, seed=2)[1], mu)


def test_a_factor_problem_has_a_balanced_risk_aversion() -> None:
    problem = factor_problem(100, 10, seed=1)
    assert problem.budget == 10 and problem.risk_aversion > 0
    with pytest.raises(ValueError, match="num_assets"):
        factor_universe(1, seed=0)
