"""The elementary transforms of the obfuscation proxy, each with its exact effect on energies.

Every function here is pure mathematics on :class:`~qhybrid.domain.qubo.Ising` problems and bit
matrices; :mod:`qhybrid.proxy.obfuscation` chains them with secret random choices. Each transform
states how the energy of a sent bitstring relates to the energy of the original one, and the
tests check exactly that relation:

* :func:`permute` — ``E'(y) = E(x)`` where sent qubit ``positions[i]`` carries variable ``i``;
* :func:`flip_spins` — ``E'(x ⊕ f) = E(x)`` (a gauge transform: ``z_i → −z_i`` on the flipped set);
* :func:`rescale` — ``E'(x) = a·E(x) + b`` with ``a > 0``;
* :func:`add_noise` — ``E'(x) = E(x) + N(x)`` with ``N`` the returned noise problem;
* :func:`append_twins` — ``E'(x, y*) = E(x) + C``: decoys at their designated values change every
  energy by the same constant;
* :func:`subspace_mask` — ``E'(x) = E(x)`` on every ``x`` of Hamming weight ``W`` (and only there).

Bit convention as in :mod:`qhybrid.domain.qubo`: ``x_i = 1`` is the spin ``z_i = −1``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain.qubo import FloatArray, Ising, Qubo

BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


def symmetric_couplings(ising: Ising) -> FloatArray:
    """``J + Jᵀ``: the couplings as a symmetric matrix with a zero diagonal."""
    return np.asarray(ising.couplings + ising.couplings.T, dtype=np.float64)


def ising_to_qubo(ising: Ising) -> Qubo:
    """The QUBO with the same energy on every bit vector (the inverse of :meth:`Qubo.to_ising`).

    With ``z = 1 − 2x``: ``Σ_{i<j} J_ij z_i z_j`` gives ``4 J_ij x_i x_j``, that is ``Q_ij = Q_ji =
    2 J_ij``, plus linear terms ``−2 Σ_j J_ij x_i``; ``Σ h_i z_i`` gives ``−2 h_i x_i``. The
    constants add up to ``offset + Σ h + Σ J``.
    """
    full = symmetric_couplings(ising)
    matrix = 2.0 * full
    np.fill_diagonal(matrix, -2.0 * ising.h - 2.0 * full.sum(axis=1))
    offset = float(ising.offset + ising.h.sum() + ising.couplings.sum())
    return Qubo(matrix=matrix, offset=offset)


def permute(ising: Ising, positions: IntArray) -> Ising:
    """Move variable ``i`` to qubit ``positions[i]``.

    Args:
        ising: The problem over ``n`` variables.
        positions: A permutation of ``0 … n−1``.

    Returns:
        The relabelled problem: ``E'(y) = E(x)`` whenever ``y[positions[i]] = x[i]`` for all ``i``.
    """
    order = np.asarray(positions, dtype=np.int64)
    n = ising.num_qubits
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"positions must be a permutation of 0..{n - 1}")
    h = np.empty(n, dtype=np.float64)
    h[order] = ising.h
    full = np.empty((n, n), dtype=np.float64)
    full[np.ix_(order, order)] = symmetric_couplings(ising)
    return Ising(h=h, couplings=np.triu(full, k=1), offset=ising.offset)


def flip_spins(ising: Ising, flips: BoolArray) -> Ising:
    """The gauge transform ``z_i → −z_i`` on the flipped qubits (``x_i → 1 − x_i``).

    ``h_i`` changes sign on a flipped qubit and ``J_ij`` when exactly one of ``i, j`` is flipped,
    so ``E'(x ⊕ flips) = E(x)`` for every ``x``.
    """
    mask = np.asarray(flips, dtype=np.bool_)
    if mask.shape != (ising.num_qubits,):
        raise ValueError(f"flips must have shape ({ising.num_qubits},), got {mask.shape}")
    signs = np.where(mask, -1.0, 1.0)
    return Ising(
        h=ising.h * signs,
        couplings=ising.couplings * np.outer(signs, signs),
        offset=ising.offset,
    )


def rescale(ising: Ising, factor: float, shift: float) -> Ising:
    """``E' = factor·E + shift`` (``factor > 0`` keeps the order of all energies)."""
    if not factor > 0.0 or not np.isfinite(factor) or not np.isfinite(shift):
        # The values are key material: they must never reach an error text, an event or a log.
        raise ValueError("factor must be positive and finite, and shift finite (values withheld)")
    return Ising(
        h=factor * ising.h,
        couplings=factor * ising.couplings,
        offset=factor * ising.offset + shift,
    )


def coefficient_spreads(ising: Ising) -> tuple[float, float]:
    """``(spread of h, spread of J)``: the units in which noise is calibrated.

    The spread is the standard deviation over variables (fields) or pairs (couplings). It
    measures what varies from one variable to the next, which is what identifies them; a
    constant part (such as a uniform budget penalty) is no business information and is left out.
    When a family does not vary, its mean magnitude (or else the other family's spread) is used,
    so that a degenerate problem still gets noise of a sensible size.
    """
    n = ising.num_qubits
    upper = ising.couplings[np.triu_indices(n, k=1)]
    spreads: list[float] = []
    for values in (ising.h, upper):
        spread = float(values.std()) if values.size else 0.0
        if not spread > 0.0 and values.size:
            spread = float(np.abs(values).mean())
        spreads.append(spread)
    field, coupling = spreads
    fallback = max(field, coupling) or 1.0
    return (field or fallback), (coupling or fallback)


def add_noise(
    ising: Ising, rng: np.random.Generator, field_std: float, coupling_std: float
) -> tuple[Ising, Ising]:
    """Add independent Gaussian noise to every field and every coupling.

    Returns:
        ``(noisy, noise)`` with ``noisy = ising + noise`` coefficient-wise, so that
        ``E_noisy(x) = E(x) + E_noise(x)`` (the noise problem has no offset).
    """
    if field_std < 0.0 or coupling_std < 0.0:
        raise ValueError("noise standard deviations must be non-negative")
    n = ising.num_qubits
    noise_h = rng.normal(0.0, 1.0, size=n) * field_std
    noise_j = np.triu(rng.normal(0.0, 1.0, size=(n, n)), k=1) * coupling_std
    noise = Ising(h=noise_h, couplings=noise_j, offset=0.0)
    noisy = Ising(h=ising.h + noise_h, couplings=ising.couplings + noise_j, offset=ising.offset)
    return noisy, noise


def append_twins(ising: Ising, templates: IntArray, partners: IntArray, active: BoolArray) -> Ising:
    """Append decoy qubits, each a twin of a real variable, after the ``n`` real ones.

    The twins are built in the QUBO form ``xᵀQx``, where a variable's row says what holding it
    costs next to every other one. Decoy ``k`` copies the row of its template ``t = templates[k]``:
    ``Q_{k,j} = Q_{t,j}`` for ``j ≠ t``, and towards its own template the entry of another
    variable of that row, ``Q_{k,t} = Q_{t,partners[k]}`` (a copy of the diagonal ``Q_{t,t}`` would
    stand out). Two decoys couple like their templates (or like the template and its partner when
    both copy the same variable). So a decoy looks like one more asset of the same kind.

    Each decoy has a designated value ``y*_k = active[k]``. An active decoy, once set, adds its
    row ``2 Σ_j Q_{k,j} x_j`` to the energy of the real variables; that is compensated exactly by
    subtracting ``2 Σ_{k active} Q_{k,j}`` from every real diagonal ``Q_{j,j}``, and every decoy's
    diagonal is its template's after that change. For a budget penalty this is what raising the
    budget by the number of active decoys does, so the sent problem still looks like one
    portfolio problem (a twin of a held asset is held, a twin of an unheld one is not), and

    ``E'(x, y*) = E(x) + C`` for every ``x``, with a constant ``C``;

    in particular with no active decoy ``E'(x, 0…0) = E(x)``.

    Args:
        ising: The real problem over ``n ≥ 2`` variables.
        templates: For each decoy, the real variable it copies.
        partners: For each decoy, a real variable ``≠`` its template.
        active: For each decoy, its designated value.

    Returns:
        The problem over ``n + len(templates)`` qubits, decoys last.
    """
    n = ising.num_qubits
    t = np.asarray(templates, dtype=np.int64)
    p = np.asarray(partners, dtype=np.int64)
    on = np.asarray(active, dtype=np.bool_)
    if t.size == 0:
        return ising
    if n < 2:
        raise ValueError("decoys need at least two real variables")
    if (
        t.ndim != 1
        or t.shape != p.shape
        or t.shape != on.shape
        or np.any((t < 0) | (t >= n) | (p < 0) | (p >= n) | (t == p))
    ):
        raise ValueError("templates and partners must be distinct real variables, one of each per decoy")
    qubo = ising_to_qubo(ising)
    q = qubo.matrix
    d = t.size
    total = n + d
    # Extended index: real j is itself, decoy k stands for its template. ``source`` says which
    # real row and column each extended index copies.
    source = np.concatenate([np.arange(n), t])
    matrix = q[np.ix_(source, source)].copy()
    # A decoy against its own template, or against another twin of the same template, would copy
    # a diagonal entry; it takes the template's entry towards the partner instead.
    same = source[:, np.newaxis] == source[np.newaxis, :]
    same[np.arange(total), np.arange(total)] = False
    rows, cols = np.nonzero(same)
    for row, col in zip(rows, cols, strict=True):
        decoy = max(row, col)
        matrix[row, col] = matrix[col, row] = q[source[decoy], p[decoy - n]]
    # Compensate the active decoys on the real diagonal, then give each twin its template's.
    real = np.arange(n)
    active_rows = n + np.flatnonzero(on)
    matrix[real, real] -= 2.0 * matrix[np.ix_(active_rows, real)].sum(axis=0)
    decoys = np.arange(n, total)
    matrix[decoys, decoys] = matrix[t, t]
    return Qubo(matrix=matrix, offset=qubo.offset).to_ising()


def subspace_mask(ising: Ising, weight: int, row_shifts: FloatArray, field_shift: float) -> Ising:
    """Change the coefficients without changing any energy of Hamming weight ``weight``.

    On the states with ``Σ x = W`` the spins add up to ``m = N − 2W``, so for every ``i``
    ``Σ_{j≠i} z_i z_j = m z_i − 1`` and ``Σ_i z_i = m``. Hence adding ``w_i + w_j`` to every
    coupling, ``−m w_i`` to every field and ``Σ w`` to the offset, and then ``v`` to every field and
    ``−v m`` to the offset, leaves those energies unchanged: the XY mixer never leaves that
    subspace, so the sent problem is equivalent there. It hides the uniform budget penalty
    (``w`` with a negative mean removes it) and the row sums of the couplings.

    Args:
        ising: The problem over ``N`` qubits.
        weight: ``W``, the Hamming weight the mixer preserves.
        row_shifts: ``w``, shape ``(N,)``.
        field_shift: ``v``.

    Returns:
        The masked problem.
    """
    n = ising.num_qubits
    w = np.asarray(row_shifts, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"row_shifts must have shape ({n},), got {w.shape}")
    if not 0 <= weight <= n:
        raise ValueError(f"weight must be in 0..{n}, got {weight}")
    m = float(n - 2 * weight)
    couplings = ising.couplings + np.triu(w[:, np.newaxis] + w[np.newaxis, :], k=1)
    h = ising.h - m * w + field_shift
    offset = ising.offset + float(w.sum()) - field_shift * m
    return Ising(h=h, couplings=couplings, offset=offset)


def sent_to_true(bits: NDArray[np.uint8], positions: IntArray, flips: BoolArray) -> NDArray[np.uint8]:
    """Sent outcomes ``(m, N)`` to the real variables ``(m, n)``: pick, then undo the flips."""
    rows = np.asarray(bits, dtype=np.uint8)
    where = np.asarray(positions, dtype=np.int64)
    flipped = np.asarray(flips, dtype=np.bool_)[where].astype(np.uint8)
    return np.asarray(rows[:, where] ^ flipped[np.newaxis, :], dtype=np.uint8)


def true_to_sent(
    bits: NDArray[np.uint8],
    positions: IntArray,
    flips: BoolArray,
    decoy_bits: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Real bit vectors ``(m, n)`` to sent ones ``(m, N)``; decoys take ``decoy_bits`` (default 0).

    ``decoy_bits`` are the decoys' values before the flips, in the order of the decoy qubits
    (increasing qubit index), shape ``(m, N − n)`` or ``(N − n,)``.
    """
    rows = np.asarray(bits, dtype=np.uint8)
    where = np.asarray(positions, dtype=np.int64)
    flipped = np.asarray(flips, dtype=np.bool_)
    total = flipped.size
    sent = np.zeros((rows.shape[0], total), dtype=np.uint8)
    sent[:, where] = rows
    decoys = np.setdiff1d(np.arange(total), where)
    if decoy_bits is not None and decoys.size:
        sent[:, decoys] = np.broadcast_to(
            np.asarray(decoy_bits, dtype=np.uint8), (rows.shape[0], decoys.size)
        )
    return np.asarray(sent ^ flipped.astype(np.uint8)[np.newaxis, :], dtype=np.uint8)
