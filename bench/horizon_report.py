"""Analysis and rendering of the long-horizon reports (``bench/tta_horizon.py`` runs the jobs and calls these).

Per configuration and arm: val loss and accuracy ÷ baseline at equal CPU time, the crossover, time to the
early and late accuracy targets, the clock check and the "never loses" verdict; ``render`` writes the
markdown, ``render_plot`` the figure. Only pairs of one session are compared (see :func:`paired`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from time_to_accuracy import crossing, mean_sd

from sift_fast.cli.arms import default_name, is_arm
from sift_fast.io import atomic_savefig

ARMS = ("baseline", "entropy", "random", "anneal", "anneal-horizon", "lr", "sample", "noise")


def ordered(arms) -> list[str]:
    """The arms present, in ``ARMS`` order, then the ``until<F>[-lr|…]`` ones sorted."""
    return [a for a in ARMS if a in arms] + sorted(a for a in arms if a not in ARMS)


def known(arm: str) -> bool:
    return arm in ARMS or (arm.startswith("until") and is_arm(arm))
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
EARLY, LATE = (0.6, 0.75), (0.9, 0.97)  # accuracy targets: fractions of the baseline's best
EARLY_SHARE_MIN = 0.8  # a default keeps at least this share of the entropy arm's saving at every early target


# --- analysis ---------------------------------------------------------------------------------------
def interp(evals: list[dict[str, Any]], key: str, t: float) -> float | None:
    """``key`` linearly interpolated at training time ``t`` (None outside the evaluated range)."""
    pts = [(e["wall_s"], e[key]) for e in evals if e[key] == e[key]]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (t - t0) / (t1 - t0) * (v1 - v0)
    return None


def crossover(arm: list[dict[str, Any]], base: list[dict[str, Any]], key: str, higher: bool,
              after: float) -> dict[str, float] | None:
    """First eval of ``arm`` past ``after`` from which on it stays worse than the baseline (interpolated)."""
    worse_from = None
    for e in arm:
        b = interp(base, key, e["wall_s"])
        if b is None or e["wall_s"] < after:
            continue
        worse = e[key] < b if higher else e[key] > b
        if worse and worse_from is None:
            worse_from = e
        elif not worse:
            worse_from = None
    if worse_from is None:
        return None
    return {"wall_s": worse_from["wall_s"], "samples": worse_from["samples"], "step": worse_from["step"]}


def paired(by_seed: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The baseline runs an arm's seeds are compared with: the same seed, finished in the same session. The CPU
    clock changes from session to session by up to 40 %, so a cross-session pair would compare clocks. Runs of
    the reports before 2026-12-06 carry their session's date, set from the commit history."""
    return {sd: base[sd] for sd, r in by_seed.items() if sd in base and r.get("session") == base[sd].get("session")}


def with_probes(runs: dict[str, dict[int, dict[str, Any]]],
                probes: dict[str, dict[int, dict[str, Any]]] | None) -> dict[str, dict[int, dict[str, Any]]]:
    """Each arm's full runs, and its prefix probes (``--probe-s``) for the seeds without a full run: what the early
    targets are measured on (a probe is its schedule's first S CPU-s, so up to S it is a run like the others)."""
    out = {arm: dict(by) for arm, by in runs.items()}
    for arm, by in (probes or {}).items():
        for sd, r in by.items():
            out.setdefault(arm, {}).setdefault(sd, {**r, "probe": True})
    return {arm: dict(sorted(by.items())) for arm, by in out.items()}


def analyse(runs: dict[str, dict[int, dict[str, Any]]], budget: float, meta: dict[str, Any],
            probes: dict[str, dict[int, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Per arm: equal-time ratios, targets, crossover, worst excess and clock check. The early targets also pool
    ``probes`` (seeds without a full run); the levels, the late targets and everything else use full runs only."""
    base = runs.get("baseline", {})
    early = with_probes(runs, probes)
    early_keys = {f"acc:{f:g}" for f in EARLY}
    best = [max(e["val_mlm_acc"] for e in r["evals"]) for r in base.values()]
    levels = {f"acc:{f:g}": round(f * min(best), 4) for f in (*EARLY, *LATE)} if best else {}
    n_train, seq = meta.get("train_sequences"), meta.get("seq_len", 128)
    out: dict[str, Any] = {"levels": levels, "arms": {}}
    for arm, by_seed in runs.items():
        row: dict[str, Any] = {"seeds": sorted(by_seed), "equal_time": {}, "targets": {}, "crossover": {},
                               "worst_excess": {}}
        pb = paired(by_seed, base)  # the baseline seeds this arm is compared with
        row["paired_seeds"] = len(pb)
        row["final_loss"] = mean_sd([r["evals"][-1]["val_loss"] for r in by_seed.values()])
        row["final_acc"] = mean_sd([r["evals"][-1]["val_mlm_acc"] for r in by_seed.values()])
        for key in ("all", "word_embeddings"):
            row[f"norm_{key}"] = mean_sd([r["norms"][key] for r in by_seed.values() if r.get("norms")])
        row["step_time"] = mean_sd([r["summary"]["train_time_s"] / max(1, r["summary"]["steps"])
                                    for r in by_seed.values()])
        for f in FRACTIONS:
            for key in ("val_loss", "val_mlm_acc"):
                ratios = []
                for sd, r in by_seed.items():
                    a, b = interp(r["evals"], key, f * budget), interp(pb.get(sd, {}).get("evals", []), key,
                                                                        f * budget)
                    if a is not None and b:
                        ratios.append(a / b)
                row["equal_time"][f"{key}@{f:g}"] = mean_sd(ratios)
        eb = early.get(arm, by_seed)
        epb = paired(eb, early.get("baseline", {}))
        row["probe_seeds"] = [sd for sd, r in eb.items() if r.get("probe") and sd in epb]  # pooled and paired
        for name, lv in levels.items():
            src, src_base = (eb, epb) if name in early_keys else (by_seed, pb)
            ratios, censored = [], 0
            for sd, r in src.items():
                h = crossing(r["evals"], "val_mlm_acc", lv, True)
                bh = crossing(src_base.get(sd, {}).get("evals", []), "val_mlm_acc", lv, True)
                if h and bh and bh["wall_s"] > 0:
                    ratios.append(h["wall_s"] / bh["wall_s"])
                elif sd in src_base and (h or bh) and (r.get("probe") or src_base[sd].get("probe")):
                    censored += 1  # one side reached the level, the other was a probe that stopped first
            row["targets"][name] = {"ratio": mean_sd(ratios), "n": len(ratios), "of": len(src),
                                    "probes": sum(1 for r in src.values() if r.get("probe")), "censored": censored}
        if arm != "baseline":
            for key, higher in (("val_loss", False), ("val_mlm_acc", True)):
                cells = []
                for sd, r in by_seed.items():
                    if sd not in pb:
                        continue
                    c = crossover(r["evals"], pb[sd]["evals"], key, higher, 0.1 * budget)
                    if c is not None:
                        c["tokens"] = c["samples"] * seq
                        c["passes"] = c["samples"] / n_train if n_train else None
                    cells.append(c)
                row["crossover"][key] = cells
            excess = []
            for sd, r in by_seed.items():
                if sd in pb:
                    diffs = [e["val_loss"] - b for e in r["evals"] if e["wall_s"] >= 0.1 * budget
                             and (b := interp(pb[sd]["evals"], "val_loss", e["wall_s"])) is not None]
                    excess.append(max(diffs) if diffs else None)
            row["worst_excess"]["val_loss"] = excess
            row["clock_ratio"] = [clock_ratio(r["evals"], pb[sd]["evals"]) if sd in pb else None
                                  for sd, r in by_seed.items()]
        out["arms"][arm] = row
    return out


def full_step_time(evals: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """(s/step, first, last CPU-s) over the eval intervals where every candidate was backpropagated (a
    switched arm's plain steps, or the baseline's); None if there are none."""
    spent = steps = 0.0
    lo = hi = None
    for e0, e1 in zip(evals, evals[1:]):
        ds = e1["samples"] - e0["samples"]
        if ds > 0 and e1["backprop_samples"] - e0["backprop_samples"] == ds and e1["step"] > e0["step"]:
            spent, steps = spent + e1["wall_s"] - e0["wall_s"], steps + e1["step"] - e0["step"]
            lo, hi = e0["wall_s"] if lo is None else lo, e1["wall_s"]
    return None if not steps else (spent / steps, lo, hi)


def clock_ratio(arm: list[dict[str, Any]], base: list[dict[str, Any]]) -> float | None:
    """The same full step timed in both runs: the arm's s/step after its switch ÷ the baseline's over the same
    CPU-time window. 1 = both clocks ran alike; > 1 = the arm's run was slowed (its curve is penalised)."""
    a = full_step_time(arm)
    if a is None:
        return None
    win = [e for e in base if a[1] <= e["wall_s"] <= a[2]]
    b = full_step_time(win)
    return None if b is None else a[0] / b[0]


def seed_sd(base: dict[int, dict[str, Any]], budget: float) -> float | None:
    """Seed noise of the baseline's val loss: the median, over evals past 10 % of the budget, of the sd across
    the seeds of one session at equal CPU time, pooled over sessions (None without two seeds in one session).

    Only seeds of one session are compared: the shared machine's CPU clock runs up to 40 % faster or slower
    from one session to the next (7 % within one), and where the LR decays over the time budget that changes
    the whole curve, at equal time and at equal step alike, so the spread across sessions is not seed noise.
    A run's session is the machine's boot id when its report was written (run directories do not outlive a
    session); runs carried over from older reports have none and are not used here."""
    by_session: dict[str, list[dict[str, Any]]] = {}
    for r in base.values():
        if r.get("session"):
            by_session.setdefault(r["session"], []).append(r)
    sds = []
    for group in (g for g in by_session.values() if len(g) >= 2):
        for e in group[0]["evals"]:
            if e["wall_s"] < 0.1 * budget:
                continue
            vals = [v for r in group if (v := interp(r["evals"], "val_loss", e["wall_s"])) is not None]
            if len(vals) == len(group):
                sds.append(mean_sd(vals)[1] or 0.0)
    return sorted(sds)[len(sds) // 2] if sds else None


def pooled_sd(vb: list[tuple[float, float, str | None]]) -> float | None:
    """The baselines' seed sd at one time, pooled over sessions (seeds of one session only, as :func:`seed_sd`):
    ``vb`` holds (arm, baseline, session) per seed; None without two baseline seeds of one session."""
    groups: dict[str, list[float]] = {}
    for _, b, session in vb:
        if session:
            groups.setdefault(session, []).append(b)
    dof = sum(len(g) - 1 for g in groups.values())
    if not dof:
        return None
    return (sum((len(g) - 1) * (mean_sd(g)[1] or 0.0) ** 2 for g in groups.values()) / dof) ** 0.5


def share_error(share: float | None, arm_t: dict[str, Any], ent_t: dict[str, Any]) -> float | None:
    """Standard error of a share (1 - r) / (1 - re) of the entropy arm's saving, from the two seed means' errors
    (sd ÷ √n of the per-seed time ratios; delta method). The two means are treated as independent: where they
    share baseline seeds their errors correlate positively, so for a positive share the true error is smaller.
    None with < 2 seeds."""
    (r, sr), (re_, sre) = arm_t.get("ratio", (None, None)), ent_t.get("ratio", (None, None))
    nr, nre = arm_t.get("n", 0), ent_t.get("n", 0)
    if share is None or None in (r, sr, re_, sre) or nr < 2 or nre < 2:
        return None
    return ((sr ** 2 / nr) + share ** 2 * (sre ** 2 / nre)) ** 0.5 / (1 - re_)


def verdict(runs: dict[str, dict[int, dict[str, Any]]], a: dict[str, Any], budget: float) -> dict[str, Any]:
    """The issue's two tests of a default, per arm: never worse than the baseline past 10 % of the budget
    within seed noise (the seed-mean excess of val loss at equal CPU time <= the baseline's seed sd at every
    eval of the arm's first seed), and its share of the entropy arm's time saving to the early targets
    (``passes_both``: within noise and a share >= ``EARLY_SHARE_MIN`` at every early target; None where either
    cannot be computed, e.g. no entropy run). Context, not part of the test: at the worst eval, the paired
    standard error of that mean (sd of the per-seed excesses ÷ √seeds) and the spread of the baselines' own
    seeds of one session then (``worst_se`` / ``worst_base_sd``, :func:`pooled_sd`; None with one seed)."""
    base = runs.get("baseline", {})
    sd = seed_sd(base, budget)
    out: dict[str, Any] = {"seed_sd": sd, "arms": {}}
    ent = a["arms"].get("entropy", {}).get("targets", {})
    for arm, by_seed in runs.items():
        if arm == "baseline" or not by_seed:
            continue
        seeds = list(paired(by_seed, base))
        worst = worst_se = worst_base_sd = None
        for e in by_seed[seeds[0]]["evals"] if seeds else []:
            if e["wall_s"] < 0.1 * budget:
                continue
            vb = [(v, b, base[s].get("session")) for s in seeds
                  if (v := interp(by_seed[s]["evals"], "val_loss", e["wall_s"])) is not None
                  and (b := interp(base[s]["evals"], "val_loss", e["wall_s"])) is not None]
            if len(vb) == len(seeds):
                m, sd_ex = mean_sd([v - b for v, b, _ in vb])
                if worst is None or m > worst:
                    worst = m
                    worst_se = sd_ex / len(vb) ** 0.5 if len(vb) > 1 else None
                    worst_base_sd = pooled_sd(vb)
        share, share_se = {}, {}
        for lv in (f"acc:{f:g}" for f in EARLY):
            at, et = a["arms"][arm]["targets"].get(lv, {}), ent.get(lv, {})
            r, re_ = at.get("ratio", (None, None))[0], et.get("ratio", (None, None))[0]
            share[lv] = (1 - r) / (1 - re_) if r is not None and re_ is not None and re_ < 1 else None
            share_se[lv] = share_error(share[lv], at, et) if arm != "entropy" else None  # 1 by definition
        within = None if worst is None else worst <= (sd if sd is not None else 0.0)
        defined = within is not None and all(x is not None for x in share.values())  # no entropy run: no share
        both = within and all(x >= EARLY_SHARE_MIN - 1e-9 for x in share.values()) if defined else None
        out["arms"][arm] = {"seeds": len(seeds), "worst_mean_excess": worst, "within_noise": within,
                            "early_share": share, "early_share_se": share_se, "passes_both": both, "worst_se": worst_se,
                            "worst_base_sd": worst_base_sd}
    return out


def _f(ms: tuple[float | None, float | None], spec: str = ".3f") -> str:
    m, s = ms
    return "-" if m is None else (f"{m:{spec}}" if not s else f"{m:{spec}} ± {s:{spec}}")


def share_cell(r: dict[str, Any]) -> str:
    """A verdict row's early shares, each with its standard error where known: ``0.893 ± 0.18 / 0.796 ± 0.22``."""
    se = r.get("early_share_se") or {}
    return " / ".join("-" if x is None else f"{x:.3f}" + ("" if se.get(k) is None else f" ± {se[k]:.2f}")
                      for k, x in r["early_share"].items())  # three digits: 0.796 is not 0.80


def probe_note(rep: dict[str, Any]) -> str:
    """The sentence naming the prefix probes pooled into the early targets ('' without any): only those paired
    with a baseline of their session and not superseded by a full run, and the pairs a probe's end cut short."""
    arms = rep["analysis"]["arms"]
    used = {arm: r["probe_seeds"] for arm, r in arms.items() if r.get("probe_seeds") and arm != "baseline"}
    if not used:
        return ""
    stops = {r.get("summary", {}).get("paused_after_s") for by in (rep.get("probes") or {}).values()
             for r in by.values()}
    cut = sum(t.get("censored", 0) for r in arms.values() for t in r["targets"].values())
    per = "; ".join(f"{arm} {', '.join(map(str, seeds))}" for arm, seeds in sorted(used.items()))
    return (f" The early targets ({' and '.join(f'{f:g}×' for f in EARLY)}) also pool prefix probes: the first "
            f"{'/'.join(f'{x:g}' for x in sorted(x for x in stops if x))} CPU-s of the same schedule "
            f"(`--probe-s`), each paired with the same seed's baseline run or probe of its session "
            f"(arms' probe seeds: {per}); "
            f"{cut} pair(s) dropped because a probe stopped before one side reached the level.")


def render(name: str, rep: dict[str, Any]) -> str:
    a, meta = rep["analysis"], rep["meta"]
    arms = ordered(a["arms"])
    lines = [f"# Long-horizon time to accuracy: {name}", "",
             f"Corpus `{meta['corpus']}`, preset `{meta['preset']}`, C = {meta['candidates']}, keep {meta['keep']}, "
             f"budget {meta['budget_s']:g} CPU-s per run (process clock, 1 thread), eval every {meta['eval_every']} "
             f"steps; train split {meta.get('train_sequences', '?')} sequences of {meta.get('seq_len', 128)}. "
             f"Machine: {meta['machine']}. Ratios are arm ÷ baseline of the same seed; mean ± sd over seeds. "
             f"The trainer's default SIFT is `{default_name()}` (`until<F>`: entropy selection for the first F of "
             "the horizon, then plain steps; `-lr`: selection steps' LR × √keep; `-lr4`: × keep^¼; `-lr38`: × "
             "keep^⅜; `-lrp<P>`: × keep^P; `-emb`: the √keep scale on the word embeddings only).", "",
             "| arm | seeds | s/step | final val loss | final acc | " +
             " | ".join(f"loss@{int(f * 100)}%" for f in FRACTIONS) + " | " +
             " | ".join(f"acc {k[4:]}×best" for k in a["levels"]) + " | worst loss excess past 10% | final ‖W‖ / ‖E‖ |",
             "|---" * (7 + len(FRACTIONS) + len(a["levels"])) + "|"]
    for arm in arms:
        r = a["arms"][arm]
        eq = [_f(r["equal_time"][f"val_loss@{f:g}"]) for f in FRACTIONS]
        tg = [(_f(t["ratio"], ".2f") + ("" if t["n"] == t["of"] else f" ({t['n']}/{t['of']})")) if t["n"] else
              "never" if r.get("paired_seeds", 1) else "-" for t in r["targets"].values()]
        ex = [x for x in r["worst_excess"].get("val_loss", []) if x is not None]
        unpaired = "" if r.get("paired_seeds", 1) else " (no baseline of its session)"
        lines.append(f"| {arm}{unpaired} | {len(r['seeds'])} | {_f(r['step_time'])} | {_f(r['final_loss'])} | "
                     f"{_f(r['final_acc'], '.4f')} | " + " | ".join(eq) + " | " + " | ".join(tg) +
                     f" | {', '.join(f'{x:+.3f}' for x in ex) if ex else '-'} | " +
                     " / ".join(_f(r.get(f"norm_{k}", (None, None)), ".1f") for k in ("all", "word_embeddings")) + " |")
    lines += ["", "Targets: accuracy levels " + ", ".join(f"{k[4:]}× = {v:g}" for k, v in a["levels"].items()) +
              " of the baseline's (worst seed's) best accuracy; cells are time to target ÷ baseline. ‖W‖ / ‖E‖: L2 "
              "norm of all final weights / of the word embeddings (tied to the MLM decoder); runs of sessions before "
              "2026-12-06 did not record it." + probe_note(rep), "",
              "**Crossover** (first eval past 10 % of the budget from which on the arm stays worse than the "
              "baseline; per seed; `-` = never within the budget):", "",
              "| arm | val loss: CPU-s / tokens / passes | val acc: CPU-s / tokens / passes |", "|---|---|---|"]
    for arm in arms:
        if arm == "baseline":
            continue
        cells = []
        for key in ("val_loss", "val_mlm_acc"):
            parts = []
            for c in a["arms"][arm]["crossover"].get(key, []):
                parts.append("-" if c is None else f"{c['wall_s']:.0f} s / {c['tokens'] / 1e6:.1f} M / "
                             + (f"{c['passes']:.2f}" if c.get("passes") is not None else "?"))
            cells.append("; ".join(parts) or "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    v = a.get("verdict")
    if v and v["arms"]:
        sd = v["seed_sd"]
        lines += ["", "**Never loses?** Worst seed-mean excess of val loss over the baseline's at equal CPU time past "
                  "10 % of the budget, against the baseline's seed sd (seeds of one session, at equal CPU time) " +
                  (f"({sd:.4f}, median over its evals)" if sd is not None else
                   "(no two baseline seeds ran in one session: no noise estimate, so the test is excess ≤ 0)") +
                  "; the share of the entropy arm's time saving to the early targets kept; and the clock check "
                  "(an arm that switches to the plain step times the same step as the baseline: its s/step there ÷ "
                  "the baseline's over the same CPU-time window, per seed; > 1: its run's clock ran slower than the "
                  "baseline's, which penalises its curve; two runs of one session differ by up to ±7 % on their "
                  "own). Context, not part of the test: at the eval of the worst mean excess, its paired standard "
                  "error (sd of the per-seed excesses ÷ √seeds) and the sd of the baselines' own seeds at that time "
                  "(seeds of one session, pooled over sessions); ± beside a share: its standard error (from the two "
                  "seed means' errors, delta method; the shares pool prefix probes where the report has any, the seeds "
                  "column counts full runs). Arms are compared with the baseline seed of the "
                  "same session only:", "",
                  "| arm | seeds | worst mean excess | within noise | early saving ÷ entropy's: " +
                  " / ".join(f"{k[4:]}×best" for k in v["arms"][next(iter(v["arms"]))]["early_share"]) +
                  f" | both tests (≥ {EARLY_SHARE_MIN:g} at each target, within noise) | clock check | "
                  "at the worst eval: paired SE / baselines' sd |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm in ordered(v["arms"]):
            r = v["arms"][arm]
            w = "-" if r["worst_mean_excess"] is None else f"{r['worst_mean_excess']:+.4f}"
            ok = {True: "yes", False: "**no**", None: "-"}[r["within_noise"]]
            sh = share_cell(r)
            ck = ", ".join(f"{x:.3f}" for x in a["arms"][arm].get("clock_ratio", []) if x is not None) or "-"
            both = {True: "**yes**", False: "no", None: "-"}[r.get("passes_both")]
            ctx = " / ".join("-" if r.get(k) is None else f"{r[k]:.3f}" for k in ("worst_se", "worst_base_sd"))
            lines.append(f"| {arm} | {r['seeds']} | {w} | {ok} | {sh} | {both} | {ck} | {ctx} |")
    lines.append("")
    return "\n".join(lines)


def render_plot(name: str, rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = rep["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {a: cycle[i % len(cycle)] for i, a in enumerate(ordered(runs))}
    base = runs.get("baseline", {})
    for arm in ordered(runs):
        for j, (sd, r) in enumerate(sorted(runs[arm].items())):
            ev = r["evals"]
            t = [e["wall_s"] for e in ev]
            lab = arm if j == 0 else None
            axes[0].plot(t, [e["val_loss"] for e in ev], color=colors[arm], lw=1.1, label=lab)
            axes[1].plot(t, [e["val_mlm_acc"] for e in ev], color=colors[arm], lw=1.1, label=lab)
            if arm != "baseline" and str(sd) in map(str, base):
                b = base.get(sd) or base.get(str(sd))
                d = [(e["wall_s"], e["val_loss"] - v) for e in ev
                     if (v := interp(b["evals"], "val_loss", e["wall_s"])) is not None]
                axes[2].plot([x for x, _ in d], [y for _, y in d], color=colors[arm], lw=1.1, label=lab)
    axes[2].axhline(0, color="k", lw=0.8)
    for ax, yl in zip(axes, ("val loss", "val MLM accuracy", "val loss − baseline's at equal CPU time"), strict=True):
        ax.set_xlabel("CPU time, s (process clock)")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    losses = [e["val_loss"] for by in runs.values() for r in by.values() for e in r["evals"]]
    if losses:
        axes[0].set_ylim(min(losses) - 0.1, min(losses) + 1.5)
    axes[0].legend()
    fig.suptitle(f"{name}: one line per seed", fontsize=11)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
