"""Time-to-event metrics with the argument conventions of ``sksurv.metrics`` (numpy only).

Conventions (as scikit-survival, so tests compare value for value):

* ``event`` is 0/1 or bool (1: the event was observed at ``time``; 0: censored at ``time``), ``time`` >= 0.
* ``estimate`` is a **risk score**: higher means an earlier event (Cox linear predictor, cumulative hazard),
  except for the Brier score, whose ``estimate`` is the predicted **survival probability** ``S(t | x)``.
* ``survival_train`` / ``survival_test`` are structured arrays with an event field first and a time field
  second (``surv_array(event, time)`` builds one; scikit-survival's ``Surv.from_arrays`` arrays work too) or
  ``(event, time)`` pairs. The training split only estimates the censoring distribution ``G`` (reverse
  Kaplan-Meier) for the inverse-probability-of-censoring weights.

Functions: ``kaplan_meier``, ``concordance_index_censored`` (Harrell), ``concordance_index_ipcw`` (Uno),
``cumulative_dynamic_auc`` (time-dependent cumulative/dynamic AUC), ``brier_score``,
``integrated_brier_score`` (both IPCW, Graf et al. 1999) and ``calibration_at_horizon`` (observed Kaplan-Meier
vs mean predicted event probability per risk group at a fixed time).

Edge cases: all samples censored, or no comparable pair, raise ``ValueError``; evaluation ``times`` must lie
inside the test follow-up ``[min time, max time)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["surv_array", "check_survival", "kaplan_meier", "CensoringKM", "concordance_index_censored",
           "concordance_index_ipcw", "cumulative_dynamic_auc", "brier_score", "integrated_brier_score",
           "calibration_at_horizon", "cox_calibration_slope", "kaplan_meier_at"]


def surv_array(event, time) -> np.ndarray:
    """Structured array ``[("event", bool), ("time", float64)]`` (scikit-survival's ``y`` layout)."""
    event, time = check_survival(event, time, allow_all_censored=True)
    out = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
    out["event"], out["time"] = event, time
    return out


def check_survival(event, time, name: str = "survival", allow_all_censored: bool = False):
    """``(event bool [N], time float64 [N])`` checked: same length, times finite and >= 0, events 0/1."""
    ev = np.asarray(event)
    t = np.asarray(time, np.float64)
    if ev.ndim != 1 or t.ndim != 1 or ev.shape != t.shape:
        raise ValueError(f"{name}: event and time must be 1-D of one length, got {ev.shape} and {t.shape}")
    if len(t) == 0:
        raise ValueError(f"{name}: no samples")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"{name}: times must be finite and >= 0 ({int(np.sum(~np.isfinite(t)))} NaN/Inf, "
                         f"{int(np.sum(t < 0))} negative)")
    if ev.dtype != bool:
        evf = ev.astype(np.float64)
        if not np.all(np.isin(evf, (0.0, 1.0))):
            raise ValueError(f"{name}: events must be 0/1, got values {sorted(set(np.unique(evf).tolist()))[:5]}")
        ev = evf.astype(bool)
    if not allow_all_censored and not ev.any():
        raise ValueError(f"{name}: all samples are censored (no event)")
    return ev, t


def _unpack(y, name):
    if isinstance(y, np.ndarray) and y.dtype.names:
        if len(y.dtype.names) != 2:
            raise ValueError(f"{name}: a structured array needs two fields (event, time), got {y.dtype.names}")
        return check_survival(y[y.dtype.names[0]], y[y.dtype.names[1]], name, allow_all_censored=True)
    event, time = y
    return check_survival(event, time, name, allow_all_censored=True)


def kaplan_meier(event, time, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier ``(unique times [T], S(t) [T])``; ``reverse``: the censoring distribution ``G``."""
    event, time = check_survival(event, time, "kaplan_meier", allow_all_censored=True)
    uniq, inv = np.unique(time, return_inverse=True)
    n_events = np.bincount(inv, weights=event.astype(np.float64), minlength=len(uniq))
    n_total = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    n_at_risk = n_total[::-1].cumsum()[::-1]
    if reverse:
        n_at_risk = n_at_risk - n_events
        n_events = n_total - n_events
    ratio = np.divide(n_events, n_at_risk, out=np.zeros_like(n_events), where=n_at_risk != 0)
    return uniq, np.cumprod(1.0 - ratio)


class CensoringKM:
    """Reverse Kaplan-Meier ``G(t)`` of a training split, evaluated as a right-continuous step function."""

    def __init__(self, event, time):
        event, time = check_survival(event, time, "survival_train", allow_all_censored=True)
        if event.all():  # no censoring: G = 1
            self.times, self.prob = np.unique(time), np.ones(len(np.unique(time)))
        else:
            t, g = kaplan_meier(event, time, reverse=True)
            self.times, self.prob = np.r_[-np.inf, t], np.r_[1.0, g]

    def __call__(self, t) -> np.ndarray:
        t = np.asarray(t, np.float64)
        extends = t > self.times[-1]
        if self.prob[-1] > 0 and extends.any():
            raise ValueError(f"time must be smaller than the largest observed time of the training split: "
                             f"{self.times[-1]}")
        out = np.zeros(t.shape, np.float64)
        valid = ~extends
        idx = np.searchsorted(self.times, t[valid])
        idx = np.minimum(idx, len(self.times) - 1)
        exact = np.abs(self.times[idx] - t[valid]) < np.finfo(np.float64).eps
        idx[~exact] -= 1
        out[valid] = self.prob[idx]
        return out

    def ipcw(self, event, time) -> np.ndarray:
        """``1 / G(t_i)`` for events, 0 for censored samples."""
        w = np.zeros(len(time))
        g = self(np.asarray(time)[event])
        if np.any(g == 0.0):
            raise ValueError("censoring survival function is zero at one or more event times")
        w[event] = 1.0 / g
        return w


def _concordance(event, time, estimate, weights, tied_tol):
    """Weighted concordance: pairs (i event, j) with ``t_j > t_i``, or ``t_j == t_i`` and ``j`` censored."""
    estimate = np.asarray(estimate, np.float64)
    if estimate.shape != time.shape:
        raise ValueError(f"estimate must be [N={len(time)}] risk scores, got shape {estimate.shape}")
    if not np.all(np.isfinite(estimate)):
        raise ValueError("estimate contains NaN or Inf")
    if not event.any():
        raise ValueError("all samples are censored")
    num = den = 0.0
    concordant = discordant = tied_risk = tied_time = 0
    events = np.flatnonzero(event)
    for start in range(0, len(events), 512):  # chunks of events bound the [E, N] comparison matrices
        i = events[start:start + 512]
        ti, ei, wi = time[i, None], estimate[i, None], weights[i]
        comp = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
        ties = (np.abs(estimate[None, :] - ei) <= tied_tol) & comp
        con = (estimate[None, :] < ei) & comp & ~ties
        n_comp, n_ties, n_con = comp.sum(1), ties.sum(1), con.sum(1)
        num += float(np.sum(wi * n_con + 0.5 * wi * n_ties))
        den += float(np.sum(wi * n_comp))
        concordant += int(n_con.sum())
        tied_risk += int(n_ties.sum())
        discordant += int((n_comp - n_con - n_ties).sum())
        tied_time += int(((time[None, :] == ti) & ~event[None, :]).sum())
    if concordant + discordant + tied_risk == 0:
        raise ValueError("no comparable pairs: the concordance index is undefined")
    return num / den, concordant, discordant, tied_risk, tied_time


def concordance_index_censored(event_indicator, event_time, estimate, tied_tol: float = 1e-8):
    """Harrell's C: ``(cindex, concordant, discordant, tied_risk, tied_time)`` as ``sksurv.metrics``."""
    event, time = check_survival(event_indicator, event_time, "concordance_index_censored")
    return _concordance(event, time, estimate, np.ones(len(time)), tied_tol)


def concordance_index_ipcw(survival_train, survival_test, estimate, tau: float | None = None,
                           tied_tol: float = 1e-8):
    """Uno's C (IPCW, squared weights ``1 / G(t_i)^2``), truncated at ``tau`` (events at ``t >= tau`` weigh 0).

    Returns ``(cindex, concordant, discordant, tied_risk, tied_time)`` as ``sksurv.metrics``.
    """
    ev_tr, t_tr = _unpack(survival_train, "survival_train")
    event, time = _unpack(survival_test, "survival_test")
    cens = CensoringKM(ev_tr, t_tr)
    if tau is None:
        w = cens.ipcw(event, time)
    else:
        mask = time < float(tau)
        w = np.zeros(len(time))
        w[mask] = cens.ipcw(event[mask], time[mask])
    return _concordance(event, time, estimate, np.square(w), tied_tol)


def _check_times(test_time, times) -> np.ndarray:
    times = np.unique(np.atleast_1d(np.asarray(times, np.float64)))
    if times.size == 0 or times.max() >= test_time.max() or times.min() < test_time.min():
        raise ValueError(f"all times must be within the follow-up of the test data: [{test_time.min()}; "
                         f"{test_time.max()}[")
    return times


def _estimate_2d(estimate, n, times, name):
    est = np.asarray(estimate, np.float64)
    if est.shape[0] != n or est.ndim not in (1, 2) or (est.ndim == 2 and est.shape[1] != len(times)):
        raise ValueError(f"{name}: estimate must be [N={n}] or [N={n}, T={len(times)}], got shape {est.shape}")
    if not np.all(np.isfinite(est)):
        raise ValueError(f"{name}: estimate contains NaN or Inf")
    return est


def cumulative_dynamic_auc(survival_train, survival_test, estimate, times, tied_tol: float = 1e-8):
    """Cumulative/dynamic AUC at ``times`` (Uno et al. 2007; Hung & Chiang 2010): cases have ``t_i <= t`` with an
    event (weighted ``1 / G(t_i)``), controls ``t_i > t``. ``estimate``: risk ``[N]`` or ``[N, T]``.

    Returns ``(auc [T], mean_auc)``; ``mean_auc`` weighs each time by the test Kaplan-Meier's drop there.
    """
    ev_tr, t_tr = _unpack(survival_train, "survival_train")
    event, time = _unpack(survival_test, "survival_test")
    times = _check_times(time, times)
    est = _estimate_2d(estimate, len(time), times, "cumulative_dynamic_auc")
    n, nt = len(time), len(times)
    if est.ndim == 1:
        est = np.broadcast_to(est[:, None], (n, nt))
    ipcw = CensoringKM(ev_tr, t_tr).ipcw(event, time)
    scores = np.empty(nt)
    for k, t in enumerate(times):
        o = np.argsort(-est[:, k])
        tt, ee, ss, ww = time[o], event[o], est[o, k], ipcw[o]
        is_case = (tt <= t) & ee
        is_control = tt > t
        tied = np.abs(np.diff(np.r_[np.inf, ss])) <= tied_tol
        tp = np.cumsum(is_case * ww)
        fp = np.cumsum(is_control)
        tp, fp = tp / tp[-1], fp / is_control.sum()
        drop = np.flatnonzero(tied) - 1  # keep only the last of each run of tied scores
        tp, fp = np.r_[0.0, np.delete(tp, drop)], np.r_[0.0, np.delete(fp, drop)]
        scores[k] = np.trapezoid(tp, fp)
    if nt == 1:
        return scores, float(scores[0])
    km_t, km_s = kaplan_meier(event, time)
    s = _step(km_t, km_s, times)
    d = -np.diff(np.r_[1.0, s])
    return scores, float((scores * d).sum() / (1.0 - s[-1]))


def _step(t_grid, values, t):
    """Right-continuous step function through ``(t_grid, values)`` (1 before the first time) at ``t``."""
    idx = np.searchsorted(t_grid, np.asarray(t, np.float64), side="right") - 1
    return np.where(idx >= 0, values[np.maximum(idx, 0)], 1.0)


def cox_calibration_slope(event, time, x, iters: int = 30) -> float:
    """The Cox partial-likelihood coefficient of one covariate ``x`` (Breslow ties; Newton steps): the calibration
    slope when ``x`` is a model's ``log(-log S(h | x))`` (perfect: 1; NaN when it does not converge)."""
    order = np.argsort(-time, kind="stable")
    e, t, x = event[order].astype(np.float64), time[order], x[order]
    b = 0.0
    for _ in range(iters):
        w = np.exp(np.clip(b * x, -50, 50))
        s0, s1, s2 = np.cumsum(w), np.cumsum(w * x), np.cumsum(w * x * x)
        # risk set of a time: every patient with time >= it; with ties take the last cumsum index of the tie
        last = np.searchsorted(-t, -t, side="right") - 1
        s0, s1, s2 = s0[last], s1[last], s2[last]
        g = np.sum(e * (x - s1 / s0))
        h = np.sum(e * (s2 / s0 - (s1 / s0) ** 2))
        if not h > 1e-12:
            return float("nan")
        step = g / h
        b += step
        if abs(step) < 1e-8:
            break
    return float(b) if np.isfinite(b) and abs(b) < 1e3 else float("nan")


def kaplan_meier_at(event, time, t: float) -> float:
    """The Kaplan-Meier estimate of ``S(t)`` (1 before the first event time)."""
    km_t, km_s = kaplan_meier(event, time)
    return float(_step(km_t, km_s, [t])[0])


def brier_score(survival_train, survival_test, estimate, times):
    """IPCW Brier score of survival probabilities ``estimate [N, T]`` at ``times``: ``(times, scores [T])``."""
    ev_tr, t_tr = _unpack(survival_train, "survival_train")
    event, time = _unpack(survival_test, "survival_test")
    times = _check_times(time, times)
    est = _estimate_2d(estimate, len(time), times, "brier_score")
    if est.ndim == 1:
        if len(times) != 1:
            raise ValueError(f"brier_score: estimate [N] needs one time point, got {len(times)}")
        est = est[:, None]
    cens = CensoringKM(ev_tr, t_tr)
    g_t = cens(times)
    g_t[g_t == 0] = np.inf
    g_y = cens(time)
    g_y[g_y == 0] = np.inf
    scores = np.empty(len(times))
    for k, t in enumerate(times):
        is_case = ((time <= t) & event).astype(int)
        is_control = (time > t).astype(int)
        scores[k] = np.mean(np.square(est[:, k]) * is_case / g_y + np.square(1.0 - est[:, k]) * is_control / g_t[k])
    return times, scores


def integrated_brier_score(survival_train, survival_test, estimate, times) -> float:
    """Trapezoidal integral of :func:`brier_score` over ``times`` divided by their range (>= 2 times)."""
    times, scores = brier_score(survival_train, survival_test, estimate, times)
    if len(times) < 2:
        raise ValueError("integrated_brier_score: at least two time points must be given")
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def calibration_at_horizon(event, time, survival_at_t, t: float, n_groups: int = 5) -> dict:
    """Calibration at ``t``: patients in ``n_groups`` quantile groups of predicted ``S(t | x)``; per group the
    mean predicted event probability ``1 - S`` and the observed one, ``1 - KM(t)`` of the group.

    Returns ``{"predicted", "observed", "n", "events"}`` (lists, one entry per non-empty group, lowest
    predicted risk first) and ``ici``: the patient-weighted mean ``|observed - predicted|``.
    """
    event, time = check_survival(event, time, "calibration_at_horizon", allow_all_censored=True)
    s = np.asarray(survival_at_t, np.float64)
    if s.shape != time.shape or not np.all(np.isfinite(s)):
        raise ValueError(f"survival_at_t must be finite [N={len(time)}], got shape {s.shape}")
    if int(n_groups) < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    risk = 1.0 - s
    order = np.argsort(risk, kind="stable")
    pred, obs, ns, evs = [], [], [], []
    for g in np.array_split(order, int(n_groups)):
        if len(g) == 0:
            continue
        pred.append(float(risk[g].mean()))
        obs.append(1.0 - kaplan_meier_at(event[g], time[g], t))
        ns.append(int(len(g)))
        evs.append(int(event[g].sum()))
    w = np.asarray(ns, np.float64)
    ici = float(np.sum(w * np.abs(np.asarray(obs) - np.asarray(pred))) / w.sum())
    return {"t": float(t), "predicted": pred, "observed": obs, "n": ns, "events": evs, "ici": ici}
