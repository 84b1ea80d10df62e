"""Run by test_hostile: a recipe whose second step blocks (30 s) on the bad frame, deadline 1 s.

Prints "started" once the first frame is stored, then the summary as JSON when the run ends.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import hostile_plugin  # noqa: E402

from host import Recipe  # noqa: E402
from host.core.runner import new_run_info, open_reporter, open_source, run_recipe  # noqa: E402

folder, out = sys.argv[1], sys.argv[2]
pm = hostile_plugin.plugin_manager()


class Block(hostile_plugin.InspectTool):
    id = "hostile.block"
    Params = hostile_plugin.NoParams
    measurements = {"mean": "mean"}

    def inspect(self, image):
        if hostile_plugin._bad(image):
            import time
            time.sleep(30)
        return hostile_plugin._good_output(image)


class P:
    @hostile_plugin.hookimpl
    def loupe_inspect(self, register):
        register(Block)


pm.register_plugin(P(), name="block", distribution="(tests)")
recipe = Recipe.from_dict({"loupe_recipe": 1, "deadline_ms": 1000, "inspect": [{"tool": "hostile.block"}]},
                          pm.catalogue)
spec = f"folder:{folder}"
info = new_run_info(recipe, spec, pm)
rep = open_reporter(f"jsonl:{out}", pm.catalogue, info)


def on_frame(result):
    print("started", flush=True)


s = run_recipe(recipe, open_source(spec, pm.catalogue), [rep], pm, info, on_frame=on_frame)
print(json.dumps({"interrupted": s.interrupted, "overruns": s.deadline_overruns, "frames": s.frames}), flush=True)
