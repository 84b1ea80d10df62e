"""summ.py RUN...: count accuracy and mAP50 test / dev / dev2, threshold, best epoch, times; RUN a path without .eval"""
import json, sys, os
for r in sys.argv[1:]:
    ca, mp = [], []
    for s in ("bench", "dev", "dev2"):
        f = f"{r}.eval.{s}.json"
        if os.path.exists(f) and os.path.getsize(f):
            d = json.load(open(f)); ca.append(d["count_accuracy"]); mp.append(d["map50"])
    try:
        m = json.load(open(f"{r}/bundle.json"))["metrics"]
        ex = f"thr {m['min_score']} best {m['best_epoch']}/{m['epochs_run']} valmAP {m.get('val_map50')} train_s {m['train_seconds']} ver_s {m.get('verifier_seconds')}"
    except Exception as e:
        ex = str(e)
    t = open(f"{r}.time").read().split() if os.path.exists(f"{r}.time") else []
    mean = sum(ca) / len(ca) if ca else float("nan")
    print(f"{os.path.basename(r):6s} ca {' / '.join(f'{x:.2f}' for x in ca)} ({mean:.3f})  map50 {' / '.join(f'{x:.3f}' for x in mp)}  {ex}  time {t}")
