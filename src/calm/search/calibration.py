"""A probability that the top search result is right, fitted on queries with known answers.

A raw score means little on its own (its level depends on the model, the query and the
collection), so search describes each query's best result by three features:

    score    the top result's exact score
    margin   top score minus the second-best score (how clearly it wins)
    z        (top score - median of the reference sample) / (1.4826 x its MAD): how far above
             what unrelated videos reach *for this query* it lies

and turns them into P(top result is right) with a calibrator fitted on a split whose answers
are known (`calm index --calibrate`: the checkpoint's validation split). Two calibrators are
fitted, and the one with the lower expected calibration error (ECE) under 5-fold
cross-validation (folds by video, so no caption is scored by a model that saw its video's other
captions) is kept:

    platt     logistic regression on the standardised features
    isotonic  a monotone step function (pool-adjacent-violators) of the Platt model's logit

Abstention: search says "no confident match" when the probability is below a threshold chosen
on the cross-validated probabilities so that at most `target` (10 %) of the *correct* answers
of the calibration split fall below it. The rate on wrong answers at that threshold is measured
and stored next to it. The VAE's sigma does not enter: it was measured to carry no information
about whether a result is right (docs/results.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

FEATURES = ("score", "margin", "z")
ABSTAIN_CORRECT = 0.10  # at most this share of correct answers gets "no confident match"
FOLDS = 5
ECE_BINS = 10
MIN_EXAMPLES = 20  # fewer calibration queries than this fit nothing usable
L2 = 1e-2  # ridge on the logistic weights: keeps a separable split finite


def reference_stats(scores: np.ndarray) -> tuple[float, float]:
    """(median, robust spread) of a query's scores against the reference sample."""
    scores = np.asarray(scores, dtype=np.float64)
    centre = float(np.median(scores))
    spread = 1.4826 * float(np.median(np.abs(scores - centre)))
    return centre, max(spread, 1e-6, 1e-3 * float(scores.std()))


def query_features(top: float, second: float | None, reference: np.ndarray) -> np.ndarray:
    """The features of one query's best result, in the order of FEATURES."""
    centre, spread = reference_stats(reference)
    second = centre if second is None else second
    return np.array([top, top - second, (top - centre) / spread], dtype=np.float64)


def expected_calibration_error(prob: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width probability bins of |accuracy - mean probability| x bin share."""
    prob, correct = np.asarray(prob, np.float64), np.asarray(correct, np.float64)
    which = np.minimum((prob * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - prob[sel].mean())
    return float(ece)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 50):
    """(weights, bias) of a ridge logistic regression by Newton's method (x standardised)."""
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    ridge = np.diag([l2 * n] * d + [0.0])
    for _ in range(iters):
        p = _sigmoid(a @ w)
        grad = a.T @ (p - y) + ridge @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + ridge + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:d], float(w[d])


def fit_isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A non-decreasing step function of x by pool-adjacent-violators: (upper x of each step,
    its value). Equal x values are pooled first: one x gets one value."""
    xs, inverse = np.unique(np.asarray(x, np.float64), return_inverse=True)
    weights = np.bincount(inverse).astype(np.float64)
    sums = np.bincount(inverse, weights=np.asarray(y, np.float64))
    values, blocks, ends = [], [], []
    for xi, wi, si in zip(xs, weights, sums):
        values.append(si / wi)
        blocks.append(wi)
        ends.append(xi)
        while len(values) > 1 and values[-2] >= values[-1]:
            w = blocks[-2] + blocks[-1]
            values[-2] = (values[-2] * blocks[-2] + values[-1] * blocks[-1]) / w
            blocks[-2] = w
            ends[-2] = ends[-1]
            del values[-1], blocks[-1], ends[-1]
    return np.array(ends), np.array(values)


@dataclass
class Calibrator:
    """P(top result is right) from FEATURES; JSON-serialisable, stored in the index manifest."""

    method: str  # platt | isotonic
    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    steps_x: list[float] = field(default_factory=list)  # isotonic: step ends on the logit
    steps_p: list[float] = field(default_factory=list)
    threshold: float = 0.0  # abstain below this probability
    report: dict = field(default_factory=dict)  # how it was fitted and what it measured

    def logit(self, features: np.ndarray) -> np.ndarray:
        x = (np.atleast_2d(features) - np.array(self.mean)) / np.array(self.std)
        return x @ np.array(self.weights) + self.bias

    def probability(self, features: np.ndarray) -> np.ndarray:
        logit = self.logit(features)
        if self.method == "platt":
            return _sigmoid(logit)
        ends, values = np.array(self.steps_x), np.array(self.steps_p)
        return values[np.minimum(np.searchsorted(ends, logit, side="left"), len(values) - 1)]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Calibrator:
        return cls(**data)


def _fit(method: str, x: np.ndarray, y: np.ndarray) -> Calibrator:
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    w, b = fit_logistic((x - mean) / std, y)
    cal = Calibrator(method, mean.tolist(), std.tolist(), w.tolist(), b)
    if method == "isotonic":
        ends, values = fit_isotonic(cal.logit(x), y)
        cal.steps_x, cal.steps_p = ends.tolist(), values.tolist()
    return cal


def _folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold id per example; every example of one group (video) lands in the same fold."""
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(unique.tolist(), rng.permutation(len(unique)) % folds))
    return np.array([fold_of[g] for g in groups.tolist()])


def out_of_fold(method: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                folds: int = FOLDS) -> np.ndarray:
    """Every example's probability from a calibrator fitted without its fold."""
    fold = _folds(groups, folds)
    prob = np.empty(len(y))
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        train = ~test
        if y[train].min() == y[train].max():  # one class only: the base rate is all it knows
            prob[test] = y[train].mean()
        else:
            prob[test] = _fit(method, x[train], y[train]).probability(x[test])
    return prob


def abstention_threshold(prob: np.ndarray, correct: np.ndarray, target: float = ABSTAIN_CORRECT) -> float:
    """The largest threshold below which at most `target` of the correct answers fall."""
    p = np.sort(prob[correct.astype(bool)])
    if not len(p):
        return 1.0
    allowed = int(np.floor(target * len(p)))  # correct answers that may abstain
    return float(p[allowed]) if allowed < len(p) else float(p[-1])


def fit_calibrator(features: np.ndarray, correct: np.ndarray, groups: np.ndarray,
                   target: float = ABSTAIN_CORRECT) -> Calibrator:
    """Fits both calibrators, keeps the one with the lower cross-validated ECE, and sets the
    abstention threshold; `report` holds the measurements (ECE of each, abstention rates)."""
    x = np.asarray(features, np.float64)
    y = np.asarray(correct, np.float64)
    groups = np.asarray(groups)
    if len(y) < MIN_EXAMPLES:
        raise ValueError(f"calibration needs at least {MIN_EXAMPLES} queries with known answers, "
                         f"got {len(y)}")
    if y.min() == y.max():
        raise ValueError(
            "calibration needs both right and wrong top results; on this split every top result "
            f"is {'right' if y[0] else 'wrong'}, so no probability can be fitted"
        )
    oof = {m: out_of_fold(m, x, y, groups) for m in ("platt", "isotonic")}
    ece = {m: expected_calibration_error(p, y) for m, p in oof.items()}
    method = min(ece, key=lambda m: (ece[m], m != "platt"))  # a tie keeps the smooth one
    cal = _fit(method, x, y)
    threshold = abstention_threshold(oof[method], y, target)
    below = oof[method] < threshold
    cal.threshold = threshold
    cal.report = {
        "features": list(FEATURES),
        "queries": int(len(y)),
        "top1_accuracy": float(y.mean()),
        "ece": {m: round(v, 4) for m, v in ece.items()},
        "ece_bins": ECE_BINS,
        "folds": FOLDS,
        "chosen": method,
        "target_abstain_correct": target,
        "abstain_correct": float(below[y == 1].mean()),
        "abstain_wrong": float(below[y == 0].mean()) if (y == 0).any() else None,
        "brier": round(float(np.mean((oof[method] - y) ** 2)), 4),
    }
    return cal
