"""Calibrated scores: log-likelihood ratios, Cllr, actDCF and their fit.

A raw score (a cosine, an AS-norm score) ranks trials but says nothing by
itself about how likely a trial is to be a target: its EER and minDCF only
use the order of the scores. A *log-likelihood ratio* (LLR, natural log)
does: ``llr = log p(score | target) - log p(score | non-target)``, so that
for a prior ``p_target`` the Bayes decision is to accept when
``llr >= log((1 - p_target) / p_target)`` (times the cost ratio).

- :func:`cllr`: the log-likelihood-ratio cost of LLRs, in bits. 0 is
  perfect, 1 is what the constant LLR 0 ("no idea") scores; above 1 the
  LLRs are worse than no answer at all.
- :func:`min_cllr`: the Cllr of the best monotone map of the scores
  (pool-adjacent-violators), i.e. what is left when calibration is
  perfect. ``cllr - min_cllr`` is the calibration loss.
- :func:`act_dcf`: the normalised detection cost of the Bayes decisions
  the LLRs make at one prior; minDCF
  (:func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf`) is the
  same cost at the best threshold chosen *with* the labels, so
  ``act_dcf >= min_dcf`` and the difference is what the calibration loses
  at that operating point.
- :func:`fit_calibration`: prior-weighted linear logistic regression,
  ``llr = a * score + b``, returning a :class:`LinearCalibration` that
  maps scores (numpy or torch) to LLRs and saves itself as JSON.

Every function sorts or scans the trials a constant number of times:
CN-Celeb's 3.48M trials take seconds (see ``bench/scoring.py``).

Conventions
-----------
Labels are bool or 0/1, True (1) meaning a target (same-speaker) trial. A
trial is accepted when ``llr >= threshold``, the rule
:func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf` applies to raw
scores; at ``llr == threshold`` both decisions have the same expected
cost, so the tie rule changes no Bayes risk, and with it actDCF is always
one of the operating points minDCF minimises over.

Example
-------
>>> scores = [-2.0, -1.0, 0.5, 1.0, 2.0, 3.0]
>>> labels = [False, False, True, False, True, True]
>>> calibration = fit_calibration(scores, labels, p_target=0.5)
>>> llrs = calibration(scores)
>>> bool(min_cllr(scores, labels) <= cllr(llrs, labels) < 1.0)
True
"""

import json
import logging
import math
import os

import numpy as np

from speechbrain_ext.scoring.metrics import _check_scores_labels

__all__ = [
    "LinearCalibration",
    "act_dcf",
    "bayes_threshold",
    "cllr",
    "fit_calibration",
    "min_cllr",
]

logger = logging.getLogger(__name__)

_LN2 = math.log(2.0)
CALIBRATION_FORMAT = "speechbrain_ext.linear_calibration"
# A vanishing ridge on the standardised slope keeps the fit finite when the
# scores separate the classes; on real scores it moves a and b by < 1e-7.
_RIDGE = 1e-10


def _check(values, labels, what, allow_infinite=False):
    """Validates scores or LLRs and labels; returns float64 and bool arrays.

    See :func:`~speechbrain_ext.scoring.metrics._check_scores_labels`;
    ``what`` names the measure in the one-class error message, and
    ``allow_infinite`` accepts +-inf (an LLR may be certain).
    """
    return _check_scores_labels(values, labels, what, allow_infinite)


def _check_prior_costs(p_target, c_miss, c_fa):
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(
            f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}"
        )


def bayes_threshold(p_target, c_miss=1.0, c_fa=1.0):
    """The LLR above which accepting costs less than rejecting.

    Arguments
    ---------
    p_target : float
        Prior probability of a target trial, in (0, 1).
    c_miss : float
        Cost of rejecting a target trial.
    c_fa : float
        Cost of accepting a non-target trial.

    Returns
    -------
    float
        ``log(c_fa * (1 - p_target) / (c_miss * p_target))``.

    Example
    -------
    >>> round(bayes_threshold(0.01), 4)
    4.5951
    >>> bayes_threshold(0.5)
    0.0
    """
    _check_prior_costs(p_target, c_miss, c_fa)
    return math.log(c_fa * (1 - p_target)) - math.log(c_miss * p_target)


def cllr(llrs, labels):
    """Log-likelihood-ratio cost of LLRs, in bits.

    ``0.5 * (mean over targets of log2(1 + exp(-llr)) + mean over
    non-targets of log2(1 + exp(llr)))``, computed with ``logaddexp`` so
    that large LLRs neither overflow nor lose precision. An infinite LLR
    costs 0 when right and makes the Cllr infinite when wrong.

    Arguments
    ---------
    llrs : array-like
        Natural-log likelihood ratios, one per trial; +-inf allowed.
    labels : array-like
        Bool or 0/1, True (1) for target trials. Both classes must occur.

    Returns
    -------
    float
        Cllr in bits: 0 for perfect LLRs, 1 for the constant LLR 0.

    Raises
    ------
    ValueError
        For empty or mismatched inputs, NaN, bad labels or one class only.

    Example
    -------
    A target at LLR 0 and a non-target at LLR log(3):
    ``0.5 * (log2(2) + log2(4)) = 1.5`` bits.

    >>> round(cllr([0.0, math.log(3)], [True, False]), 12)
    1.5
    >>> cllr([0.0, 0.0, 0.0], [1, 0, 0])
    1.0
    """
    llrs, labels = _check(llrs, labels, "Cllr", allow_infinite=True)
    target_cost = np.logaddexp(0.0, -llrs[labels]).mean()
    nontarget_cost = np.logaddexp(0.0, llrs[~labels]).mean()
    return float(0.5 * (target_cost + nontarget_cost) / _LN2)


def _pav_llrs(scores, labels):
    """Optimal monotone LLR of each distinct score, with its class counts.

    Tied scores are pooled into one block first, so they always get the
    same LLR; pool-adjacent-violators then makes the blocks' target
    fractions non-decreasing in the score. That isotonic fraction is the
    posterior that minimises every proper scoring rule among monotone
    maps; subtracting the empirical prior log-odds turns it into an LLR.

    Arguments
    ---------
    scores : numpy.ndarray
        float64 scores, finite.
    labels : numpy.ndarray
        bool labels, both classes present.

    Returns
    -------
    llrs : numpy.ndarray
        LLR of each pooled block, in increasing score order; +-inf where
        the block holds one class only.
    n_target : numpy.ndarray
        Target trials of each block.
    n_nontarget : numpy.ndarray
        Non-target trials of each block.
    """
    from scipy.optimize import isotonic_regression

    _, inverse = np.unique(scores, return_inverse=True)
    total = np.bincount(inverse).astype(np.float64)
    n_target = np.bincount(inverse, weights=labels).astype(np.float64)
    del inverse
    blocks = isotonic_regression(
        n_target / total, weights=total, increasing=True
    ).blocks[:-1]
    # The posterior of each pooled block from its counts, not from the
    # running means: exactly 0 or 1 where a block holds one class.
    n_target = np.add.reduceat(n_target, blocks)
    total = np.add.reduceat(total, blocks)
    n_nontarget = total - n_target
    with np.errstate(divide="ignore"):
        log_odds = np.log(n_target) - np.log(n_nontarget)
    prior_log_odds = math.log(n_target.sum()) - math.log(n_nontarget.sum())
    return log_odds - prior_log_odds, n_target, n_nontarget


def min_cllr(scores, labels):
    """Cllr after the best monotone calibration of the scores.

    The scores are sorted once, tied scores pooled into one block, and
    pool-adjacent-violators gives the non-decreasing target posterior that
    fits the labels best; the prior log-odds of the trial list are
    subtracted to make LLRs, and their Cllr is returned. A block holding
    only targets (or only non-targets) gets an infinite LLR of the right
    sign and costs nothing. The result is at most 1 (the constant map
    scores 1) and at most the Cllr of any monotone map of the same scores.

    Arguments
    ---------
    scores : array-like
        One score per trial, finite; any scale (cosine, LLR...).
    labels : array-like
        Bool or 0/1, True (1) for target trials. Both classes must occur.

    Returns
    -------
    float
        Minimum Cllr in bits.

    Raises
    ------
    ValueError
        For empty or mismatched inputs, non-finite scores, bad labels or
        one class only.

    Example
    -------
    Separable scores cost nothing; when the top two trials are a
    non-target above a target, pooling gives both the posterior 1/2, the
    LLR 0 (the prior is even), and costs each ``log2(2) = 1`` bit:
    ``0.5 * (1/2 + 1/2) = 0.5``.

    >>> min_cllr([0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1])
    0.0
    >>> min_cllr([0.1, 0.2, 0.9, 0.7], [0, 0, 1, 1])
    0.0
    >>> min_cllr([0.1, 0.2, 0.7, 0.9], [0, 1, 0, 1])
    0.5
    """
    scores, labels = _check(scores, labels, "min Cllr")
    llrs, n_target, n_nontarget = _pav_llrs(scores, labels)
    # 0 * inf is NaN: a block without targets has no target cost at all.
    with np.errstate(over="ignore", invalid="ignore"):
        target_cost = np.where(
            n_target > 0, n_target * np.logaddexp(0.0, -llrs), 0.0
        ).sum()
        nontarget_cost = np.where(
            n_nontarget > 0, n_nontarget * np.logaddexp(0.0, llrs), 0.0
        ).sum()
    value = 0.5 * (
        target_cost / n_target.sum() + nontarget_cost / n_nontarget.sum()
    )
    return float(value / _LN2)


def act_dcf(llrs, labels, p_target, c_miss=1.0, c_fa=1.0):
    """Normalised detection cost of the Bayes decisions made by LLRs.

    A trial is accepted when ``llr >= bayes_threshold(p_target, c_miss,
    c_fa)``, i.e. ``log(c_fa * (1 - p) / (c_miss * p))``; at equality
    both decisions cost the same in expectation, and accepting matches the
    ``score >= threshold`` rule of
    :func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf`. The cost
    ``c_miss * p * p_miss + c_fa * (1 - p) * p_fa`` is divided by
    ``min(c_miss * p, c_fa * (1 - p))`` as minDCF is there, so that 1.0
    means "no better than deciding without the scores" and
    ``act_dcf >= min_dcf`` for the same trials.

    Arguments
    ---------
    llrs : array-like
        Natural-log likelihood ratios, one per trial; +-inf allowed.
    labels : array-like
        Bool or 0/1, True (1) for target trials. Both classes must occur.
    p_target : float
        Prior probability of a target trial, in (0, 1).
    c_miss : float
        Cost of rejecting a target trial.
    c_fa : float
        Cost of accepting a non-target trial.

    Returns
    -------
    float
        Normalised actual detection cost (can exceed 1 when the LLRs are
        badly calibrated).

    Raises
    ------
    ValueError
        For invalid inputs, prior or costs.

    Example
    -------
    At p_target 0.5 the threshold is 0: the target at -1 is missed (1 of
    2), no non-target is accepted, so ``(0.5 * 0.5 + 0.5 * 0) / 0.5 =
    0.5``. The target at exactly 0 is accepted.

    >>> act_dcf([-1.0, 0.0, -2.0, -0.5], [1, 1, 0, 0], p_target=0.5)
    0.5
    """
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    llrs, labels = _check(llrs, labels, "actDCF", allow_infinite=True)
    accepted = llrs >= threshold
    n_target = np.count_nonzero(labels)
    p_miss = np.count_nonzero(~accepted & labels) / n_target
    p_fa = np.count_nonzero(accepted & ~labels) / (labels.size - n_target)
    cost = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(cost / min(c_miss * p_target, c_fa * (1 - p_target)))


class LinearCalibration:
    """An affine map from raw scores to LLRs: ``llr = a * score + b``.

    Made by :func:`fit_calibration`; applies to numpy arrays, lists,
    floats and torch tensors (a tensor comes back as a tensor on its own
    device), and saves itself as a small JSON file.

    Arguments
    ---------
    a : float
        Slope (LLR per score unit); positive for a useful system.
    b : float
        Offset.
    p_target : float, optional
        Prior the map was trained for (the decision prior can differ).
    n_target : int, optional
        Target trials of the fit.
    n_nontarget : int, optional
        Non-target trials of the fit.
    info : dict, optional
        Anything else worth keeping with the map (how the scores were
        computed, where the trials came from); JSON-serialisable.

    Example
    -------
    >>> calibration = LinearCalibration(a=10.0, b=-3.0, p_target=0.05)
    >>> calibration([0.3, 0.5]).tolist()
    [0.0, 2.0]
    >>> calibration.accept([0.3, 0.8], p_target=0.01).tolist()
    [False, True]
    >>> round(calibration.score_threshold(0.01), 4)
    0.7595
    """

    def __init__(
        self, a, b, p_target=None, n_target=None, n_nontarget=None, info=None
    ):
        self.a = float(a)
        self.b = float(b)
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"a and b must be finite, got {a} and {b}")
        self.p_target = None if p_target is None else float(p_target)
        self.n_target = None if n_target is None else int(n_target)
        self.n_nontarget = None if n_nontarget is None else int(n_nontarget)
        self.info = dict(info or {})

    def __call__(self, scores):
        """Returns the LLRs of ``scores`` (tensor in, tensor out)."""
        if hasattr(scores, "detach"):
            return scores * self.a + self.b
        return np.asarray(scores, dtype=np.float64) * self.a + self.b

    def accept(self, scores, p_target=None, c_miss=1.0, c_fa=1.0):
        """Bayes decisions at a prior: ``llr >= bayes_threshold(...)``.

        Arguments
        ---------
        scores : array-like or torch.Tensor
            Raw scores.
        p_target : float, optional
            Decision prior; defaults to the prior of the fit.
        c_miss : float
            Cost of a miss.
        c_fa : float
            Cost of a false alarm.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            bool, True where the trial is accepted.
        """
        return self(scores) >= self.threshold(p_target, c_miss, c_fa)

    def threshold(self, p_target=None, c_miss=1.0, c_fa=1.0):
        """The LLR threshold of the Bayes decision at ``p_target``."""
        if p_target is None:
            p_target = self.p_target
        if p_target is None:
            raise ValueError("no p_target given and none stored in the fit")
        return bayes_threshold(p_target, c_miss, c_fa)

    def score_threshold(self, p_target=None, c_miss=1.0, c_fa=1.0):
        """The raw score at which the LLR reaches the Bayes threshold.

        Accepting ``score >= score_threshold(p)`` is the same decision as
        accepting ``llr >= threshold(p)`` (for a positive slope).
        """
        if self.a <= 0:
            raise ValueError(
                f"the calibration slope is {self.a}: higher scores do not "
                "mean more likely targets, so no score threshold exists"
            )
        return (self.threshold(p_target, c_miss, c_fa) - self.b) / self.a

    def to_dict(self):
        """The JSON content (see :meth:`to_json`)."""
        return {
            "format": CALIBRATION_FORMAT,
            "version": 1,
            "a": self.a,
            "b": self.b,
            "p_target": self.p_target,
            "n_target": self.n_target,
            "n_nontarget": self.n_nontarget,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, content, source="calibration"):
        """Builds the map from :meth:`to_dict` output, checking it."""
        found = content.get("format") if isinstance(content, dict) else None
        if found != CALIBRATION_FORMAT:
            raise ValueError(
                f"{source} is not a {CALIBRATION_FORMAT} file "
                f"(format {found!r})"
            )
        missing = [key for key in ("a", "b") if key not in content]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}")
        return cls(
            content["a"],
            content["b"],
            p_target=content.get("p_target"),
            n_target=content.get("n_target"),
            n_nontarget=content.get("n_nontarget"),
            info=content.get("info"),
        )

    def to_json(self, path):
        """Writes the map as JSON (written aside, then moved into place).

        Arguments
        ---------
        path : str
            The JSON file.

        Returns
        -------
        str
            ``path``.
        """
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        partial = f"{path}.partial"
        with open(partial, "w", encoding="utf-8") as fout:
            json.dump(self.to_dict(), fout, indent=2)
            fout.write("\n")
        os.replace(partial, path)
        return path

    @classmethod
    def from_json(cls, path):
        """Reads a map written by :meth:`to_json`.

        Arguments
        ---------
        path : str
            The JSON file.

        Returns
        -------
        LinearCalibration

        Raises
        ------
        ValueError
            If the file is not JSON or not a calibration.
        """
        with open(path, encoding="utf-8") as fin:
            try:
                content = json.load(fin)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not JSON: {error}") from None
        return cls.from_dict(content, source=path)

    def __eq__(self, other):
        return isinstance(other, LinearCalibration) and (
            self.to_dict() == other.to_dict()
        )

    def __repr__(self):
        return (
            f"LinearCalibration(a={self.a!r}, b={self.b!r}, "
            f"p_target={self.p_target!r}, n_target={self.n_target!r}, "
            f"n_nontarget={self.n_nontarget!r})"
        )


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    # tanh form: no overflow warning for large |x|.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_calibration(scores, labels, p_target=0.05, max_iterations=100):
    """Fits ``llr = a * score + b`` by prior-weighted logistic regression.

    Minimises the prior-weighted cross-entropy of the posterior
    ``sigmoid(a * score + b + log(p / (1 - p)))``, with the target trials
    weighted ``p / n_target`` and the non-target trials
    ``(1 - p) / n_nontarget``: the ``C_llr`` at prior ``p``, so the fit
    does not depend on the trial list's own target rate and serves
    decisions near ``p`` best. Newton's method with a backtracking line
    search on standardised scores; deterministic, a few passes over the
    trials. A vanishing ridge on the slope keeps the fit finite when the
    scores separate the classes (logged as a warning: the LLRs are then
    over-confident).

    Arguments
    ---------
    scores : array-like
        Raw scores of calibration trials (numpy, list or torch), finite.
        Use trials that the test trials never see, scored as the test
        trials will be.
    labels : array-like
        Bool or 0/1, True (1) for target trials. Both classes must occur.
    p_target : float
        Training prior, in (0, 1).
    max_iterations : int
        Newton steps at most.

    Returns
    -------
    LinearCalibration
        The map, with ``p_target`` and the trial counts of the fit.

    Raises
    ------
    ValueError
        For invalid inputs or prior.

    Example
    -------
    Scores drawn from N(+1, 1) for targets and N(-1, 1) for non-targets
    have the true LLR ``2 * score``:

    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(20000) < 10000
    >>> scores = rng.normal(np.where(labels, 1.0, -1.0), 1.0)
    >>> calibration = fit_calibration(scores, labels)
    >>> round(calibration.a, 1), abs(calibration.b) < 0.05
    (2.0, True)
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    scores, labels = _check(scores, labels, "fit_calibration")
    n_target = int(np.count_nonzero(labels))
    n_nontarget = labels.size - n_target
    center = scores.mean()
    scale = scores.std()
    if scale == 0:
        scale = 1.0
    x = (scores - center) / scale
    # Targets want a large z, non-targets a small one: fold the sign in.
    sign = np.where(labels, -1.0, 1.0)
    weight = np.where(labels, p_target / n_target, (1 - p_target) / n_nontarget)
    offset = math.log(p_target) - math.log1p(-p_target)

    def objective(params):
        z = params[0] * x + params[1] + offset
        loss = weight @ _softplus(sign * z)
        return loss + _RIDGE * params[0] ** 2

    params = np.zeros(2)
    loss = objective(params)
    converged = False
    for _ in range(max_iterations):
        z = params[0] * x + params[1] + offset
        posterior = _sigmoid(z)
        # d loss / dz = sigmoid(z) - y per trial, weighted.
        residual = weight * (posterior - labels)
        gradient = np.array(
            [residual @ x + 2 * _RIDGE * params[0], residual.sum()]
        )
        curvature = weight * posterior * (1 - posterior)
        hessian = np.array(
            [
                [curvature @ (x * x) + 2 * _RIDGE, curvature @ x],
                [curvature @ x, curvature.sum()],
            ]
        )
        step = np.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)
        if decrement < 1e-10:
            # Inside Newton's quadratic region the full step is exact to
            # ~decrement squared, below what the summed loss can resolve:
            # a line search there would only chase rounding noise.
            params = params - step
            converged = True
            break
        length = 1.0
        while True:
            candidate = params - length * step
            candidate_loss = objective(candidate)
            if candidate_loss <= loss - 0.25 * length * decrement:
                break
            length *= 0.5
            if length < 1e-10:
                candidate, candidate_loss = params, loss
                break
        if candidate_loss >= loss and length < 1e-10:
            converged = True  # no further decrease is representable
            break
        params, loss = candidate, candidate_loss
    if not converged:
        logger.warning(
            "calibration fit stopped after %d Newton steps", max_iterations
        )
    if scores[labels].min() > scores[~labels].max():
        logger.warning(
            "the calibration scores separate targets from non-targets "
            "perfectly: the fitted LLRs are over-confident; calibrate on "
            "more (or harder) trials"
        )
    a = params[0] / scale
    b = params[1] - a * center
    return LinearCalibration(
        a, b, p_target=p_target, n_target=n_target, n_nontarget=n_nontarget
    )
