"""Distance between the sparse finite-width GP kernel and the infinite-width kernel vs width
at a fixed weight count (paper Fig. 6/7 analogue).

For each setting (d, N = n0 * d): widths n from n0 (dense, p = 1) to N (p = 1/d, one expected
input per hidden unit), p = N / (n d).  Plots the exact closed form, its large-d expansion, the
paper's approximation, Monte Carlo points (mean +- 1 SE over networks) and the optima.

    python experiments/gp_kernel_distance.py [--out results/gp_kernel] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.csv_rows import write_csv
from widesparse_jax.analysis import gp_kernel as gk  # noqa: E402

SETTINGS = [(100, 8), (100, 64), (784, 8), (784, 32)]  # (d, n0): N = n0 * d


def run_setting(d: int, n0: int, num_mc: int, num_pairs: int, num_inits: int, seed: int):
    n_weights = n0 * d
    widths = np.geomspace(n0, n_weights, 48)
    ps = n_weights / (widths * d)
    exact = np.array([gk.gp_distance_exact(n, min(p, 1.0), d).total for n, p in zip(widths, ps)])
    paper = gk.gp_distance_paper(widths, np.minimum(ps, 1.0), d)
    asym = np.array([gk.gp_distance_asymptotic(n, min(p, 1.0), d) for n, p in zip(widths, ps)])
    mc_n = np.unique(np.round(np.geomspace(n0, n_weights, num_mc)).astype(int))
    mc = []
    for i, n in enumerate(mc_n):
        p = min(n_weights / (n * d), 1.0)
        mean, se = gk.monte_carlo_distance(
            jax.random.PRNGKey(seed * 1000 + i),
            int(n),
            p,
            d,
            num_pairs=num_pairs,
            num_inits=num_inits,
        )
        mc.append((n, p, mean, se, gk.gp_distance_exact(n, p, d).total))
    p_ex = gk.optimal_density_exact(n_weights, d, p_min=1.0 / d)
    p_pa = gk.optimal_density_paper(n_weights, d, p_min=1.0 / d)
    p_as = gk.optimal_density_paper_asymptotic(n_weights, d)
    opt = dict(
        d=d,
        N=n_weights,
        p_exact=p_ex,
        n_exact=n_weights / (p_ex * d),
        D_exact=gk.gp_distance_exact(n_weights / (p_ex * d), p_ex, d).total,
        p_paper=p_pa,
        n_paper=n_weights / (p_pa * d),
        p_paper_asym=p_as,
        n_paper_asym=n_weights / (p_as * d),
        D_exact_at_paper_opt=gk.gp_distance_exact(n_weights / (p_pa * d), p_pa, d).total,
    )
    return dict(widths=widths, ps=ps, exact=exact, paper=paper, asym=asym, mc=mc, opt=opt)


def plot_setting(res, path):
    o = res["opt"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.plot(res["widths"], res["exact"], "C0-", lw=2, label="exact closed form")
    ax.plot(res["widths"], res["asym"], "C2:", lw=1.5, label="large-d expansion")
    ax.plot(res["widths"], res["paper"], "C1--", lw=1.5, label="paper approximation")
    mc = np.array([(m[0], m[2], m[3]) for m in res["mc"]])
    ax.errorbar(
        mc[:, 0], mc[:, 1], yerr=mc[:, 2], fmt="ko", ms=4, capsize=3, label="Monte Carlo (±1 SE)"
    )
    ax.axvline(o["n_exact"], color="C0", alpha=0.5, lw=1)
    ax.plot(
        [o["n_exact"]],
        [o["D_exact"]],
        "C0*",
        ms=14,
        label=f"exact optimum n={o['n_exact']:.0f} (p={o['p_exact']:.3g})",
    )
    ax.axvline(o["n_paper"], color="C1", alpha=0.5, lw=1)
    ax.plot(
        [o["n_paper"]],
        [gk.gp_distance_paper(o["n_paper"], o["p_paper"], o["d"])],
        "C1*",
        ms=14,
        label=f"paper-approx optimum n={o['n_paper']:.0f} (p={o['p_paper']:.3g})",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n  (density p = N / (n d))")
    ax.set_ylabel("D = E (Θ_GP − K_∞)²")
    ax.set_title(f"d = {o['d']}, weights N = {o['N']} (= dense width {o['N'] // o['d']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/gp_kernel")
    ap.add_argument("--quick", action="store_true", help="fewer Monte Carlo samples")
    ap.add_argument("--num-mc", type=int, default=7)
    ap.add_argument("--num-pairs", type=int, default=200)
    ap.add_argument("--num-inits", type=int, default=40)
    args = ap.parse_args()
    if args.quick:
        args.num_mc, args.num_pairs, args.num_inits = 4, 64, 8
    os.makedirs(args.out, exist_ok=True)
    curve_rows, mc_rows, opt_rows = [], [], []
    for s, (d, n0) in enumerate(SETTINGS):
        t0 = time.time()
        res = run_setting(d, n0, args.num_mc, args.num_pairs, args.num_inits, seed=s)
        plot_setting(res, os.path.join(args.out, f"distance_d{d}_N{n0 * d}.png"))
        for n, p, e, pa, a in zip(
            res["widths"], res["ps"], res["exact"], res["paper"], res["asym"]
        ):
            curve_rows.append(dict(d=d, N=n0 * d, n=n, p=p, D_exact=e, D_asym=a, D_paper=pa))
        for n, p, m, se, e in res["mc"]:
            mc_rows.append(
                dict(d=d, N=n0 * d, n=n, p=p, D_mc=m, D_mc_se=se, D_exact=e, z=(m - e) / se)
            )
        opt_rows.append(res["opt"])
        print(f"d={d} N={n0 * d}: {time.time() - t0:.1f}s  opt={res['opt']}", flush=True)
    for name, rows in (
        ("curves.csv", curve_rows),
        ("monte_carlo.csv", mc_rows),
        ("optima.csv", opt_rows),
    ):
        write_csv(rows, os.path.join(args.out, name))


if __name__ == "__main__":
    main()
