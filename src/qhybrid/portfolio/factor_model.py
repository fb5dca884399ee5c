"""Synthetic universes of any size, calibrated on the real S&P 500 sample skfolio bundles.

The bundled sample has 20 stocks; real universes have hundreds. :func:`calibrate` fits a
``k``-factor model to the 20 stocks' daily simple returns over a window (principal components
of the sample covariance):

* factor variances: the top ``k`` eigenvalues;
* loadings: each stock's coordinates on the ``k`` eigenvectors, scaled to unit-variance factors;
  their per-factor mean and standard deviation across the 20 stocks are kept;
* idiosyncratic variances: the residual variances, summarised by the mean and standard
  deviation of their logarithm;
* expected returns: the factor premia ``λ`` from regressing the stocks' mean returns on their
  loadings, and the standard deviation of what the regression leaves (the alphas).

:func:`factor_universe` draws ``n`` assets from those fitted distributions (normal loadings,
log-normal idiosyncratic variances, ``μ = Bλ + α``) and returns ``Σ = B Bᵀ + D``, positive
definite by construction. These are **synthetic** assets whose statistics resemble the
20 real ones; they are not real stocks. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from qhybrid.domain.qubo import FloatArray
from qhybrid.portfolio.data import load_sp500, returns_from_prices
from qhybrid.portfolio.selection import SelectionProblem


@dataclass(frozen=True)
class FactorCalibration:
    """The fitted distributions a synthetic universe is drawn from (daily units).

    Attributes:
        loading_mean: Mean loading per factor, shape ``(k,)``.
        loading_std: Standard deviation of the loadings per factor, ``(k,)``.
        log_idio_mean: Mean of ``log`` idiosyncratic variance.
        log_idio_std: Standard deviation of ``log`` idiosyncratic variance.
        premia: Factor premia ``λ`` (expected return per unit loading), ``(k,)``.
        alpha_std: Standard deviation of the expected returns the factors leave unexplained.
        mean_return: Mean of the stocks' mean returns (the regression's intercept).
        explained: Share of the total variance the ``k`` factors explain.
        stocks: How many real stocks were fitted.
        observations: Return rows used.
    """

    loading_mean: FloatArray
    loading_std: FloatArray
    log_idio_mean: float
    log_idio_std: float
    premia: FloatArray
    alpha_std: float
    mean_return: float
    explained: float
    stocks: int
    observations: int


@functools.cache
def calibrate(factors: int = 3, window_days: int = 756) -> FactorCalibration:
    """Fit the ``factors``-factor model on the last ``window_days`` rows of the bundled prices.

    Args:
        factors: Number of principal components kept, ``1 ≤ factors < 20``.
        window_days: Price rows used (756 ≈ three trading years to 2022-12-28).

    Returns:
        The calibration (cached per argument pair).
    """
    _, prices, _ = load_sp500()
    if not 1 <= factors < prices.shape[1]:
        raise ValueError(f"factors must be between 1 and {prices.shape[1] - 1}, got {factors}")
    returns = returns_from_prices(prices[-window_days:], "simple")
    centred = returns - returns.mean(axis=0)
    covariance = centred.T @ centred / (returns.shape[0] - 1)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:factors]
    top_values, top_vectors = values[order], vectors[:, order]
    loadings = top_vectors * np.sqrt(top_values)  # unit-variance factors
    residual = np.clip(np.diag(covariance) - (loadings**2).sum(axis=1), 1e-12, None)
    means = returns.mean(axis=0)
    design = np.column_stack([np.ones(means.size), loadings])
    coefficients, *_ = np.linalg.lstsq(design, means, rcond=None)
    alphas = means - design @ coefficients
    return FactorCalibration(
        loading_mean=loadings.mean(axis=0),
        loading_std=loadings.std(axis=0, ddof=1),
        log_idio_mean=float(np.log(residual).mean()),
        log_idio_std=float(np.log(residual).std(ddof=1)),
        premia=coefficients[1:],
        alpha_std=float(alphas.std(ddof=1)),
        mean_return=float(coefficients[0]),
        explained=float(top_values.sum() / np.trace(covariance)),
        stocks=int(prices.shape[1]),
        observations=int(returns.shape[0]),
    )


def factor_universe(
    num_assets: int, *, seed: int, factors: int = 3
) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
    """``n`` synthetic assets drawn from the calibrated factor model.

    Args:
        num_assets: ``n ≥ 2``.
        seed: Seeds every draw.
        factors: Factors of the calibration.

    Returns:
        ``(names, μ, Σ)`` with names ``F0000``, ``F0001``…, daily units.
    """
    if num_assets < 2:
        raise ValueError(f"num_assets must be at least 2, got {num_assets}")
    fit = calibrate(factors)
    rng = np.random.default_rng(seed)
    loadings = rng.normal(fit.loading_mean, fit.loading_std, size=(num_assets, factors))
    idiosyncratic = np.exp(rng.normal(fit.log_idio_mean, fit.log_idio_std, size=num_assets))
    mu = fit.mean_return + loadings @ fit.premia + rng.normal(0.0, fit.alpha_std, size=num_assets)
    sigma = loadings @ loadings.T + np.diag(idiosyncratic)
    names = tuple(f"F{i:04d}" for i in range(num_assets))
    return names, mu, (sigma + sigma.T) / 2.0


def factor_problem(
    num_assets: int, budget: int, *, seed: int, factors: int = 3, risk_aversion: float | None = None
) -> SelectionProblem:
    """A selection problem on a synthetic factor-model universe (:func:`factor_universe`).

    The default risk aversion balances return and risk: ``q = (r_R − r_V) / (v_R − v_V)`` between
    the top-return selection and the greedy minimum-variance one (the exact minimum-variance
    selection, used by :func:`~qhybrid.portfolio.data.balanced_risk_aversion` on small
    problems, is out of reach at hundreds of assets).
    """
    names, mu, sigma = factor_universe(num_assets, seed=seed, factors=factors)
    q = risk_aversion if risk_aversion is not None else _balanced(mu, sigma, budget)
    return SelectionProblem(names, mu, sigma, q, budget)


def _balanced(mu: FloatArray, sigma: FloatArray, budget: int) -> float:
    n = mu.size
    chaser = np.zeros(n)
    chaser[np.argsort(-mu, kind="stable")[:budget]] = 1.0
    names = tuple(f"a{i}" for i in range(n))
    minimum = np.asarray(
        SelectionProblem(names, np.zeros(n), sigma, 1.0, budget).local_search(np.zeros(n, dtype=np.uint8)),
        dtype=np.float64,
    )
    return_gap = float((chaser - minimum) @ mu)
    variance_gap = float(chaser @ sigma @ chaser - minimum @ sigma @ minimum)
    if return_gap > 0.0 and variance_gap > 0.0:
        return return_gap / variance_gap
    return float(np.mean(np.abs(mu)) / np.mean(np.diag(sigma)))
