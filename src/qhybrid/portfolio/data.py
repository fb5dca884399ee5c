"""From prices to the ``μ`` and ``Σ`` of a portfolio problem, and real S&P 500 instances.

Estimates are per period of the price series (daily for the S&P 500 data): ``μ`` is the sample
mean of the returns and ``Σ`` either the unbiased sample covariance or its Ledoit-Wolf shrinkage
towards a scaled identity, which is better conditioned when the window is short against the
number of assets (and is what practitioners use by default).

The S&P 500 prices ship inside the skfolio wheel (20 large US stocks,
daily adjusted closes, 1990-01-02 to 2022-12-28): nothing is downloaded.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from qhybrid.domain.qubo import FloatArray
from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.selection import SelectionProblem

ReturnKind = Literal["simple", "log"]
Estimator = Literal["ledoit_wolf", "sample"]


def _checked_prices(prices: ArrayLike, minimum_rows: int) -> FloatArray:
    """Prices as a float ``(T, n)`` matrix, or a ValueError saying what is wrong."""
    table = np.asarray(prices, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] == 0:
        raise ValueError(f"prices must be a (T, n) matrix with n >= 1, got shape {table.shape}")
    if table.shape[0] < minimum_rows:
        raise ValueError(f"need at least {minimum_rows} price rows, got {table.shape[0]}")
    if not np.all(np.isfinite(table)):
        raise ValueError("prices must be finite (fill or drop missing values first)")
    if np.any(table <= 0.0):
        raise ValueError("prices must be positive")
    return table


def returns_from_prices(prices: ArrayLike, kind: ReturnKind = "simple") -> FloatArray:
    """Per-period returns of each asset.

    Args:
        prices: Shape ``(T, n)``, one row per period, positive and finite.
        kind: ``"simple"`` for ``p_t / p_{t−1} − 1``, ``"log"`` for ``log(p_t / p_{t−1})``.

    Returns:
        Shape ``(T − 1, n)``.

    Raises:
        ValueError: On a wrong shape, fewer than 2 rows, non-positive or non-finite prices, or
            an unknown kind.
    """
    table = _checked_prices(prices, 2)
    if kind == "simple":
        return np.asarray(table[1:] / table[:-1] - 1.0, dtype=np.float64)
    if kind == "log":
        return np.asarray(np.diff(np.log(table), axis=0), dtype=np.float64)
    raise ValueError(f"kind must be 'simple' or 'log', got {kind!r}")


@dataclass(frozen=True)
class Estimate:
    """Expected returns and covariance estimated from prices, with how they were obtained.

    Attributes:
        expected_returns: ``μ``, mean return per period, shape ``(n,)``.
        covariance: ``Σ`` per period, shape ``(n, n)``.
        estimator: ``"ledoit_wolf"`` or ``"sample"``.
        shrinkage: Ledoit-Wolf's shrinkage intensity in ``[0, 1]``; ``None`` for the sample one.
        observations: Number of returns used (price rows − 1).
        returns: ``"simple"`` or ``"log"`` returns.
    """

    expected_returns: FloatArray
    covariance: FloatArray
    estimator: str
    shrinkage: float | None
    observations: int
    returns: str = "simple"

    def as_dict(self) -> dict[str, object]:
        """The facts of the estimate, without the arrays (JSON-friendly)."""
        return {
            "estimator": self.estimator,
            "shrinkage": self.shrinkage,
            "observations": self.observations,
            "returns": self.returns,
            "assets": int(self.expected_returns.size),
        }


def estimate(
    prices: ArrayLike, *, estimator: Estimator = "ledoit_wolf", returns: ReturnKind = "simple"
) -> Estimate:
    """Estimate ``μ`` and ``Σ`` per period from a price history.

    Args:
        prices: Shape ``(T, n)`` with ``T ≥ 3``, positive and finite.
        estimator: ``"sample"``: the unbiased sample covariance (``ddof=1``). ``"ledoit_wolf"``:
            scikit-learn's Ledoit-Wolf estimator, ``(1 − δ) S + δ (tr S / n) I`` with the
            maximum-likelihood ``S`` (``ddof=0``, scikit-learn's convention) and the intensity
            ``δ`` that minimises the expected Frobenius error.
        returns: ``"simple"`` or ``"log"`` returns, see :func:`returns_from_prices`.

    Returns:
        The estimate.

    Raises:
        ValueError: On fewer than 3 price rows (2 returns are the least a covariance needs),
            non-positive or non-finite prices, or an unknown estimator.
    """
    table = _checked_prices(prices, 3)
    if estimator not in ("ledoit_wolf", "sample"):
        raise ValueError(f"estimator must be 'ledoit_wolf' or 'sample', got {estimator!r}")
    r = returns_from_prices(table, returns)
    mu = r.mean(axis=0)
    shrinkage: float | None = None
    if estimator == "sample":
        cov = np.atleast_2d(np.cov(r, rowvar=False, ddof=1))
    else:
        from sklearn.covariance import LedoitWolf

        fitted = LedoitWolf().fit(r)
        cov = np.asarray(fitted.covariance_, dtype=np.float64)
        shrinkage = float(fitted.shrinkage_)
    return Estimate(
        expected_returns=np.asarray(mu, dtype=np.float64),
        covariance=np.asarray((cov + cov.T) / 2.0, dtype=np.float64),
        estimator=estimator,
        shrinkage=shrinkage,
        observations=int(r.shape[0]),
        returns=returns,
    )


@functools.cache
def load_sp500() -> tuple[tuple[str, ...], FloatArray, tuple[str, ...]]:
    """The S&P 500 sample bundled with skfolio, read once per process.

    Returns:
        ``(tickers, prices, dates)``: 20 tickers, prices of shape ``(8313, 20)`` (read-only,
        rows in date order) and the ISO dates of the rows.
    """
    from skfolio.datasets import load_sp500_dataset

    frame = load_sp500_dataset()
    prices = np.array(frame.to_numpy(dtype=np.float64), copy=True)
    prices.setflags(write=False)  # the cache hands the same array to every caller
    names = tuple(str(c) for c in frame.columns)
    dates = tuple(str(d) for d in frame.index.strftime("%Y-%m-%d"))
    return names, prices, dates


def top_return_selection(expected_returns: FloatArray, budget: int) -> FloatArray:
    """The ``budget`` assets of highest expected return (ties: lowest index), as 0/1."""
    order = np.argsort(-expected_returns, kind="stable")
    bits = np.zeros(expected_returns.size, dtype=np.float64)
    bits[order[:budget]] = 1.0
    return bits


def balanced_risk_aversion(expected_returns: FloatArray, covariance: FloatArray, budget: int) -> float:
    """The risk aversion at which the return-chaser and the variance-minimiser tie.

    Let ``x_R`` be the top-``μ`` selection (optimal as ``q → 0``) and ``x_V`` the minimum-variance
    one (optimal as ``q → ∞``), with returns ``r_R ≥ r_V`` and variances ``v_R ≥ v_V``. We return
    ``q* = (r_R − r_V) / (v_R − v_V)``, where their objectives are equal.

    Why this value. Each selection's objective ``q·v − r`` is a line in ``q`` and the optimum is
    the lower envelope of those lines, a concave function ``E``. ``E`` follows ``x_R``'s line near
    0 and ``x_V``'s line for large ``q``. If ``E(q*)`` equalled both lines' common value there, the
    concave ``E`` minus either line would vanish at two points and be ``≤ 0`` everywhere, hence
    vanish in between: ``x_R`` would be optimal on ``[0, q*]`` and ``x_V`` on ``[q*, ∞)``, so no
    risk aversion at all makes a third selection optimal. Conversely, when some ``q`` makes the
    problem non-trivial, ``E(q*)`` lies strictly below both lines and the optimum at ``q*`` is
    neither ``x_R`` nor ``x_V``. So ``q*`` is non-trivial whenever any value is, and it weighs
    risk and return evenly.

    When ``x_R`` and ``x_V`` coincide (or tie in variance, or ``budget`` is 0 or ``n``), every
    ``q`` gives the same optimum; we then return ``mean|μ| / mean(diag Σ)``, the ratio that puts
    both terms on the same scale.

    Args:
        expected_returns: ``μ``, shape ``(n,)``.
        covariance: ``Σ``, shape ``(n, n)``.
        budget: Number of assets to pick.

    Returns:
        A positive, finite risk aversion.
    """
    n = expected_returns.size
    names = tuple(f"a{i}" for i in range(n))
    chaser = top_return_selection(expected_returns, budget)
    minimum = np.array(brute_force(SelectionProblem(names, np.zeros(n), covariance, 1.0, budget)).bits)
    return_gap = float(chaser @ expected_returns - minimum @ expected_returns)
    variance_gap = float(chaser @ covariance @ chaser - minimum @ covariance @ minimum)
    scale = float(np.abs(covariance).max()) * max(budget, 1) ** 2
    if variance_gap > 1e-12 * scale and return_gap > 0.0:
        return return_gap / variance_gap
    typical_variance = float(np.mean(np.diag(covariance)))
    typical_return = float(np.mean(np.abs(expected_returns)))
    if typical_variance > 0.0 and typical_return > 0.0:
        return typical_return / typical_variance
    return 1.0


def sp500_problem(
    num_assets: int,
    budget: int,
    *,
    seed: int,
    risk_aversion: float | None = None,
    window_days: int = 756,
    estimator: Estimator = "ledoit_wolf",
    end_offset_days: int = 0,
) -> SelectionProblem:
    """A real selection problem: a seeded random subset of the bundled S&P 500 stocks.

    The subset is ``numpy.random.default_rng(seed).choice(20, num_assets, replace=False)``, kept
    in the dataset's ticker order; ``μ`` and ``Σ`` are daily, estimated from simple returns over
    the last ``window_days`` price rows (756 ≈ three trading years, to 2022-12-28).

    Args:
        num_assets: How many of the 20 stocks, ``1 ≤ num_assets ≤ 20``.
        budget: How many to buy, ``0 ≤ budget ≤ num_assets``.
        seed: Chooses the subset.
        risk_aversion: ``q``; ``None`` picks :func:`balanced_risk_aversion`, the value at which the
            optimum is neither the top-return nor the minimum-variance selection whenever such
            a value exists.
        window_days: Price rows used, ``3 ≤ window_days ≤ 8313``.
        estimator: ``"ledoit_wolf"`` or ``"sample"``, see :func:`estimate`.
        end_offset_days: The window ends this many rows before the last one (0: 2022-12-28);
            with all 20 stocks the subset cannot vary, so benchmarks vary the period instead.

    Returns:
        The problem, assets named by ticker.

    Raises:
        ValueError: On arguments out of range.
    """
    names, prices, _ = load_sp500()
    if not 1 <= num_assets <= len(names):
        raise ValueError(f"num_assets must be between 1 and {len(names)}, got {num_assets}")
    if not 0 <= budget <= num_assets:
        raise ValueError(f"budget must be between 0 and {num_assets}, got {budget}")
    if not 3 <= window_days <= prices.shape[0]:
        raise ValueError(f"window_days must be between 3 and {prices.shape[0]}, got {window_days}")
    end = prices.shape[0] - end_offset_days
    if not window_days <= end <= prices.shape[0]:
        raise ValueError(f"end_offset_days must leave {window_days} rows, got {end_offset_days}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(names), size=num_assets, replace=False))
    fitted = estimate(prices[end - window_days : end, chosen], estimator=estimator)
    q = risk_aversion
    if q is None:
        q = balanced_risk_aversion(fitted.expected_returns, fitted.covariance, budget)
    if not math.isfinite(q):
        raise ValueError(f"risk_aversion must be finite, got {q}")
    return SelectionProblem(
        names=tuple(names[i] for i in chosen),
        expected_returns=fitted.expected_returns,
        covariance=fitted.covariance,
        risk_aversion=q,
        budget=budget,
    )
