import sys, json
rows = {}
for f in sys.argv[1:]:
    d = json.loads(open(f).readline()); name = f.split("_")[-1].split(".")[0]
    for k, rec in d["res"].items():
        for r in ("cur", "w5", "err", "bal", "aug", "augerr", "augbal", "train", "pc", "pcaug"):
            if r in rec:
                rows.setdefault((k, r), {})[name] = (rec[r]["thr"], rec[r]["acc"])
        rows.setdefault((k, "best"), {})[name] = ("-", rec["best"])
        rows.setdefault((k, "map50"), {})[name] = ("-", rec["map50"])
for (k, r), v in rows.items():
    cells = []
    for n in sorted(v):
        t, a = v[n]
        t = t if isinstance(t, str) else (f"{t:g}" if not isinstance(t, list) else "/".join(f"{x:g}" for x in t))
        cells.append(f"{t} : " + " / ".join(f"{x:.2f}" if r != "map50" else f"{x:.3f}" for x in a))
    print(f"| {k} | {r} | " + " | ".join(cells) + " |")
