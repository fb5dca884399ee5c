from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.data import (
    balanced_risk_aversion,
    estimate,
    load_sp500,
    returns_from_prices,
    sp500_problem,
    top_return_selection,
)
from qhybrid.portfolio.selection import SelectionProblem


def random_prices(rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0005, 0.02, size=(rows - 1, n))
    return np.asarray(100.0 * np.exp(np.vstack([np.zeros(n), np.cumsum(steps, axis=0)])))


def test_returns_simple_and_log() -> None:
    prices = random_prices(50, 4, 0)
    simple = returns_from_prices(prices)
    assert simple.shape == (49, 4)
    np.testing.assert_allclose(simple, prices[1:] / prices[:-1] - 1.0)
    log = returns_from_prices(prices, "log")
    np.testing.assert_allclose(log, np.log(prices[1:]) - np.log(prices[:-1]))
    np.testing.assert_allclose(np.exp(log) - 1.0, simple, atol=1e-14)


@pytest.mark.parametrize(
    ("prices", "match"),
    [
        (np.ones(5), "matrix"),
        (np.ones((1, 3)), "at least 2"),
        (np.array([[1.0, 2.0], [np.nan, 2.0]]), "finite"),
        (np.array([[1.0, 2.0], [0.0, 2.0]]), "positive"),
        (np.array([[1.0, 2.0], [-1.0, 2.0]]), "positive"),
    ],
)
def test_returns_reject_bad_prices(prices: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        returns_from_prices(prices)


def test_returns_reject_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        returns_from_prices(random_prices(5, 2, 0), "weird")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["simple", "log"])
def test_sample_estimator_matches_numpy(kind: str) -> None:
    prices = random_prices(200, 5, 1)
    r = returns_from_prices(prices, kind)  # type: ignore[arg-type]
    fitted = estimate(prices, estimator="sample", returns=kind)  # type: ignore[arg-type]
    np.testing.assert_allclose(fitted.expected_returns, r.mean(axis=0))
    np.testing.assert_allclose(fitted.covariance, np.cov(r.T, ddof=1), rtol=1e-12)
    assert fitted.shrinkage is None
    assert fitted.observations == 199
    assert fitted.returns == kind


def test_ledoit_wolf_matches_sklearn() -> None:
    prices = random_prices(40, 12, 2)  # short window against 12 assets: shrinkage matters
    r = returns_from_prices(prices)
    reference = LedoitWolf().fit(r)
    fitted = estimate(prices)
    assert fitted.estimator == "ledoit_wolf"
    np.testing.assert_allclose(fitted.covariance, reference.covariance_, rtol=1e-12)
    assert fitted.shrinkage == pytest.approx(reference.shrinkage_)
    assert fitted.shrinkage is not None
    assert 0.0 < fitted.shrinkage < 1.0
    np.testing.assert_allclose(fitted.expected_returns, r.mean(axis=0))
    # Shrinkage improves conditioning over the sample covariance.
    sample = estimate(prices, estimator="sample").covariance
    assert np.linalg.cond(fitted.covariance) < np.linalg.cond(sample)


def test_estimate_as_dict_has_facts_only() -> None:
    facts = estimate(random_prices(30, 3, 3)).as_dict()
    assert set(facts) == {"estimator", "shrinkage", "observations", "returns", "assets"}
    assert facts["observations"] == 29
    assert facts["assets"] == 3
    assert all(not isinstance(v, np.ndarray) for v in facts.values())


def test_estimate_validation() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        estimate(random_prices(2, 3, 0))
    bad = random_prices(10, 3, 0)
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        estimate(bad)
    bad[4, 1] = 0.0
    with pytest.raises(ValueError, match="positive"):
        estimate(bad)
    with pytest.raises(ValueError, match="estimator"):
        estimate(random_prices(10, 3, 0), estimator="oracle")  # type: ignore[arg-type]


def test_sp500_loads_offline_and_is_cached() -> None:
    names, prices, dates = load_sp500()
    assert len(names) == 20
    assert "AAPL" in names
    assert prices.shape == (8313, 20)
    assert len(dates) == 8313
    assert dates[0] == "1990-01-02"
    assert dates[-1] == "2022-12-28"
    assert list(dates) == sorted(dates)
    assert np.all(np.isfinite(prices))
    assert np.all(prices > 0.0)
    assert not prices.flags.writeable
    assert load_sp500()[1] is prices


def test_sp500_problem_is_deterministic() -> None:
    a = sp500_problem(8, 4, seed=3)
    b = sp500_problem(8, 4, seed=3)
    assert a.names == b.names
    np.testing.assert_array_equal(a.expected_returns, b.expected_returns)
    np.testing.assert_array_equal(a.covariance, b.covariance)
    assert a.risk_aversion == b.risk_aversion
    assert sp500_problem(8, 4, seed=4).names != a.names
    names = load_sp500()[0]
    assert list(a.names) == [n for n in names if n in a.names]  # dataset order
    assert a.budget == 4


def test_sp500_problem_uses_the_window() -> None:
    names, prices, _ = load_sp500()
    problem = sp500_problem(5, 2, seed=0, window_days=100, estimator="sample", risk_aversion=2.0)
    columns = [names.index(n) for n in problem.names]
    fitted = estimate(prices[-100:, columns], estimator="sample")
    np.testing.assert_allclose(problem.covariance, fitted.covariance)
    np.testing.assert_allclose(problem.expected_returns, fitted.expected_returns)
    assert problem.risk_aversion == 2.0


@pytest.mark.parametrize(
    ("n", "budget", "seed"), [(8, 4, 0), (10, 5, 0), (12, 4, 0), (16, 8, 1), (20, 10, 0)]
)
def test_sp500_problem_is_non_trivial(n: int, budget: int, seed: int) -> None:
    problem = sp500_problem(n, budget, seed=seed)
    optimum = np.array(brute_force(problem).bits)
    chaser = top_return_selection(problem.expected_returns, budget)
    safest = SelectionProblem(problem.names, np.zeros(n), problem.covariance, 1.0, budget)
    minimum = np.array(brute_force(safest).bits)
    assert not np.array_equal(optimum, chaser)
    assert not np.array_equal(optimum, minimum)


def test_balanced_risk_aversion_ties_the_extremes() -> None:
    problem = sp500_problem(10, 5, seed=0)
    q = problem.risk_aversion
    assert q == balanced_risk_aversion(problem.expected_returns, problem.covariance, 5)
    chaser = top_return_selection(problem.expected_returns, 5)
    safest = SelectionProblem(problem.names, np.zeros(10), problem.covariance, 1.0, 5)
    minimum = np.array(brute_force(safest).bits, dtype=np.float64)
    values = problem.objective(np.stack([chaser, minimum]))
    assert values[0] == pytest.approx(values[1], rel=1e-9)


def test_balanced_risk_aversion_falls_back_when_trivial() -> None:
    # The best-return assets are also the safest ones: no risk aversion changes the answer.
    mu = np.array([0.3, 0.2, 0.1])
    cov = np.diag([0.01, 0.02, 0.04])
    q = balanced_risk_aversion(mu, cov, 1)
    assert q == pytest.approx(np.mean(mu) / np.mean(np.diag(cov)))
    assert balanced_risk_aversion(mu, cov, 0) > 0.0
    assert balanced_risk_aversion(np.zeros(3), np.zeros((3, 3)), 1) == 1.0


def test_sp500_problem_validation() -> None:
    with pytest.raises(ValueError, match="num_assets"):
        sp500_problem(21, 2, seed=0)
    with pytest.raises(ValueError, match="budget"):
        sp500_problem(4, 5, seed=0)
    with pytest.raises(ValueError, match="window_days"):
        sp500_problem(4, 2, seed=0, window_days=2)
