"""Start a local Ray instance (this process owns it), then: loupe eval with and without --executor ray."""
import json, os, subprocess, sys, time
sys.path.insert(0, "/work/wt/h20/bench")
import ray

ctx = ray.init(num_cpus=3, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
               log_to_driver=False, configure_logging=False)
addr = ctx.address_info["gcs_address"]
print("ray up", addr, flush=True)
exe = "/work/wt/h20/.venv/bin/loupe"
env = {**os.environ, "OMP_NUM_THREADS": "1"}
try:
    for b, d in [("/tmp/h20w/metal", "/tmp/h20w/tex/brushed_metal"), ("/tmp/h20w/cls", "/tmp/h20w/fm"),
                 ("/tmp/h20w/seg", "/tmp/h20w/segdata"), ("/tmp/h20w/det", "/tmp/h20w/detdata")]:
        res = {}
        for mode, extra in (("local", []), ("ray", ["--executor", f"ray:{addr}", "--workers", "2"])):
            t0 = time.perf_counter()
            r = subprocess.run([exe, "eval", b, d, "--json", *extra], capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t0
            if r.returncode:
                print(b, mode, "FAILED", r.stderr[-2000:], flush=True)
                break
            res[mode] = json.loads(r.stdout)
            print(b, mode, f"{dt:.1f} s", flush=True)
        if len(res) == 2:
            a, c = (json.dumps({k: v for k, v in x.items() if k != "ms_per_image"}, sort_keys=True) for x in res.values())
            print(b, "SAME" if a == c else "DIFF\n" + a[:800] + "\n" + c[:800], flush=True)
    import scale
    fig = scale.eval_figure("/tmp/h20w/cls", "/tmp/h20w/fm", addr, 1)
    print("FIGURE", json.dumps(fig), flush=True)
finally:
    ray.shutdown()
