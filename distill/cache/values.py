"""Top-k log-probabilities <-> uint16 codes, keeping each position's top-k mass (so its tail) exact.

The loss compares the student with the teacher's sparse target: the k listed tokens plus one tail
bucket of mass 1 - sum_i p_i. For a small rounding error e_i on log p_i that KL is about

    KL ~= 1/2 * sum_i p_i (e_i - e_bar)^2  +  (sum_i p_i e_i)^2 / (2 p_tail),

so two things matter. (1) The tail term blows up where p_tail is tiny: a plain rounding of each value
cannot bound it. Each position therefore stores one `shift` added to all its decoded values,
chosen so the decoded top-k mass equals the exact one: the tail is exact to float32 rounding and the
second term vanishes (the shift is stored as an int32 count of 2^-24 nats, which compresses better
than a float). (2) The first term weighs an error by p_i. Quantising s = sqrt(p) with a
uniform step makes every entry cost the same KL (p e^2 ~ ds^2), which is the entropy-coded optimum:
fine steps for likely tokens, coarse ones for the long run of unlikely ones, fewer bits after zstd.

Levels are absolute log-probabilities (not relative to the top-1), so a flat distribution, whose
entries are all small, also gets coarser steps. Beyond the point where the sqrt grid's spacing
exceeds MAX_GAP nats the levels continue log-uniformly down to FLOOR; values below FLOOR (including
-inf) are stored at FLOOR, a probability e^-100 that float32 arithmetic already treats as zero.
"""

from __future__ import annotations

import hashlib

import numpy as np

from distill.cache.errors import RowError

DEFAULT_STEP = 1 / 448  # sqrt-probability step: mean KL 4.7e-5 nats, 120 bytes/token on Gemma-3 top-64
MAX_GAP = 0.5  # nats between levels once the sqrt grid is coarser than this
FLOOR = -100.0  # lowest level (log-prob)
MAX_POSITIVE = 1e-3  # a log-prob above this is not a normalised log-prob: refuse it
SHIFT_UNIT = 2.0 ** -24  # shifts are stored as int32 multiples of 6e-8 nats, the float32 rounding of log p ~ 0


def _sqrt_grid(step: float) -> np.ndarray:
    """(G,) float64 log-probs 2*log(1 - j*step), j = 0, 1, ..., while the spacing stays <= MAX_GAP."""
    if not 0 < step < 0.5:
        raise ValueError(f"value step {step} must lie in (0, 0.5)")
    s = 1.0 - step * np.arange(int(np.floor(1.0 / step)))  # s = sqrt(p) on a uniform grid
    grid = 2.0 * np.log(s[s > 0])
    too_wide = np.flatnonzero(grid[:-1] - grid[1:] > MAX_GAP)
    return grid[: too_wide[0] + 1] if too_wide.size else grid


def value_levels(step: float = DEFAULT_STEP) -> np.ndarray:
    """The decoding table: (L,) float32 log-probs, level 0 = 0.0, strictly decreasing to FLOOR."""
    grid = _sqrt_grid(step)
    tail = grid[-1] - MAX_GAP * np.arange(1, int(np.ceil((grid[-1] - FLOOR) / MAX_GAP)))
    levels = np.concatenate([grid, tail[tail > FLOOR], [FLOOR]]).astype(np.float32)
    if len(levels) > 65536 or np.any(np.diff(levels) >= 0):
        raise ValueError(f"value step {step} gives {len(levels)} levels; expected a strictly decreasing table "
                         "of at most 65536 (uint16 codes)")
    return levels


def levels_digest(levels: np.ndarray) -> str:
    """sha256 of the float32 table: a reader refuses a cache whose table its platform rebuilds differently."""
    return hashlib.sha256(np.ascontiguousarray(levels, dtype="<f4").tobytes()).hexdigest()


def check_logprobs(logprobs: np.ndarray) -> None:
    """Refuse NaN, +inf and positive log-probs; raises RowError naming the first bad row."""
    bad = np.isnan(logprobs) | (logprobs > MAX_POSITIVE)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=-1))[0])
        raise RowError(row, f"{logprobs[row][bad[row]][:4]} is not a log-probability")


def encode_logprobs(logprobs: np.ndarray, levels: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Quantise (n, k) float32 log-probs: codes (n, k) uint16 and shift (n,) int32 (in SHIFT_UNITs).

    Each value goes to the level nearest in sqrt(p) (on the uniform sqrt grid that is a rounding;
    below it, a search of the log-uniform tail); the shift then restores the row's exact top-k mass:
    log sum_i p_i - log sum_i exp(levels[code_i]), computed in float64. `levels` = value_levels(step).
    """
    check_logprobs(logprobs)
    lp = logprobs.astype(np.float64)
    s = np.exp(lp / 2)
    g = len(_sqrt_grid(step))
    codes = np.clip(np.rint((1.0 - s) / step), 0, g - 1)
    below = np.flatnonzero(lp < levels[g - 1])
    if below.size:
        codes.flat[below] = g - 1 + _nearest_in_sqrt(lp.flat[below], levels[g - 1:].astype(np.float64))
    codes = codes.astype(np.uint16)
    mass = np.exp(lp).sum(axis=-1)
    if not np.all(mass > 0):
        raise RowError(int(np.flatnonzero(~(mass > 0))[0]), "every listed log-prob is -inf (no probability mass)")
    decoded_mass = np.exp(levels.astype(np.float64)[codes]).sum(axis=-1)
    shift = np.rint((np.log(mass) - np.log(decoded_mass)) / SHIFT_UNIT).astype(np.int32)
    return codes, shift


def _nearest_in_sqrt(lp: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the level (decreasing, float64) nearest to each log-prob in sqrt(p); -inf -> the last."""
    depth = -levels
    with np.errstate(over="ignore"):
        i = np.clip(np.searchsorted(depth, -lp), 1, len(levels) - 1)
    s = np.exp(lp / 2)
    upper, lower = np.exp(-depth[i - 1] / 2), np.exp(-depth[i] / 2)
    return np.where(upper - s <= s - lower, i - 1, i)


def decode_logprobs(codes: np.ndarray, shift: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(n, k) float32 log-probs from codes (n, k) uint16 and shift (n,) int32."""
    out = np.take(levels, codes)
    out += (shift * SHIFT_UNIT).astype(np.float32)[:, None]
    return out


def tail_mass(logprobs: np.ndarray) -> np.ndarray:
    """(n,) float64 mass outside the listed tokens, 1 - sum_i exp(lp_i), clamped at 0.

    Float32 log-probs of a near-certain position can sum to 1 + 1e-6; that rounding is the only
    thing the clamp removes."""
    return np.maximum(1.0 - np.exp(logprobs.astype(np.float64)).sum(axis=-1), 0.0)


def sparse_kl(p_logprobs: np.ndarray, q_logprobs: np.ndarray) -> np.ndarray:
    """(n,) float64 KL(p || q) between (k+1)-bucket targets: k tokens (same order in both) plus tail.

    p_logprobs, q_logprobs: (n, k) log-probs of the same tokens. Infinite where q drops mass p has.
    """
    p, q = np.exp(p_logprobs.astype(np.float64)), np.exp(q_logprobs.astype(np.float64))
    p_tail, q_tail = tail_mass(p_logprobs), tail_mass(q_logprobs)
    with np.errstate(divide="ignore", invalid="ignore"):
        listed = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(axis=-1)
        tail = np.where(p_tail > 0, p_tail * (np.log(p_tail) - np.log(q_tail)), 0.0)
    return listed + tail
