import pickle, numpy as np, itertools
D = pickle.load(open("/tmp/s16/pc/cands.pkl", "rb"))
grid = np.round(np.arange(0.1, 0.8, 0.025), 3)
def acc(rows, thr):  # thr: per-class array
    ok = 0
    for lab, sc, truth in rows:
        keep = sc >= thr[lab] if len(lab) else np.zeros(0, bool)
        ok += int((np.bincount(lab[keep], minlength=4) == truth).all())
    return ok / len(rows)
def best_perclass(rows, start):
    t = np.array(start, float)
    for _ in range(3):  # coordinate ascent
        for c in range(4):
            best = max(grid, key=lambda g: (acc(rows, np.where(np.arange(4) == c, g, t)), -abs(g - t[c])))
            t[c] = best
    return t
for bp, (thr, rows) in D.items():
    g = np.full(4, thr)
    base = [acc(rows[n], g) for n in rows]
    ob = max(grid, key=lambda x: np.mean([acc(rows[n], np.full(4, x)) for n in rows]))
    oracle_g = [acc(rows[n], np.full(4, ob)) for n in rows]
    allrows = sum(rows.values(), [])
    tp = best_perclass(allrows, g)
    oracle_pc = [acc(rows[n], tp) for n in rows]
    # cross: fit per-class on one set, apply to the other two
    cross = []
    for n in rows:
        t = best_perclass(rows[n], g)
        cross.append(np.mean([acc(rows[m], t) for m in rows if m != n]))
    print(bp.split("/")[-1], "thr", thr, "base", np.round(base, 3), np.mean(base).round(3),
          "| oracle global", ob, np.mean(oracle_g).round(3), "| oracle per-class", tp, np.mean(oracle_pc).round(3),
          "| fit on one set, others", np.round(cross, 3), np.mean(cross).round(3))
