"""Station files are validated like recipes: every problem at once, each naming the file and the field."""
from __future__ import annotations

import pytest

from host import RecipeError
from host.core.station import load_station
from host.testing import run_loupe

from line_support import SERVE_ENV, write_station


def problems(pm, path, **kw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        load_station(path, pm.catalogue, **kw)
    return str(e.value).splitlines()


def test_valid_station_and_loupe_validate(line_pm, tmp_path):
    path = write_station(tmp_path, io="[tcp://127.0.0.1:2000]")
    cfg = load_station(path, line_pm.catalogue)
    assert cfg.jobs == ["four", "three"] and cfg.first_job == "four" and cfg.doc.buffer == 4
    assert [s.scheme for s in cfg.io] == ["tcp"] and cfg.io[0].target == "//127.0.0.1:2000"
    assert cfg.state_file == tmp_path / "station.state.json"
    r = run_loupe("validate", path, env=SERVE_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"OK {path}: station 'test-line', 2 jobs: four (four-holes")
    # recipes still validate as recipes
    r = run_loupe("validate", tmp_path / "four-holes.yaml", env=SERVE_ENV, timeout=120)
    assert r.returncode == 0 and "recipe 'four-holes'" in r.stdout


def test_every_error_names_the_file_and_the_field(line_pm, tmp_path):
    write_station(tmp_path)
    (tmp_path / "bad-recipe.yaml").write_text(
        "loupe_recipe: 1\ninspect:\n  - tool: classical.blob\n    params: {min_area: -1}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("""loupe_station: 1
jobs:
  four: four-holes.yaml
  "has space": four-holes.yaml
  broken: bad-recipe.yaml
  missing: nowhere.yaml
  pinned: {recipe: four-holes.yaml, hash: "0000000000000000000000000000000000000000000000000000000000000000"}
job: five
source: folder:images
io: ["tcp://127.0.0.1:2000", "ftp://x:1", "tcp:2000", {spec: "tcp://127.0.0.1:1", nonsense: 1}]
store: ["sqlite:x.sqlite", "htm:report"]
""")
    got = problems(line_pm, bad)
    assert all(line.startswith(f"{bad}: ") for line in got), got
    text = "\n".join(got)
    assert "jobs.has space: a job id is" in text
    assert "jobs.broken: bad-recipe.yaml: inspect[0] (blob): params.min_area:" in text
    assert "jobs.missing: nowhere.yaml: file not found" in text
    assert "jobs.pinned.hash: the station pins recipe hash 0000" in text
    assert "job: 'five' is not one of the jobs" in text
    assert "io[1]: 'ftp://x:1': no line adapter for 'ftp' is installed; installed: " in text
    assert "tcp://" in text.split("no line adapter for 'ftp' is installed; installed: ")[1].splitlines()[0]
    assert "io[2]: 'tcp:2000': expected SCHEME://HOST:PORT" in text
    assert "io[3].nonsense: unknown option" in text
    assert "store[1]: 'htm:report' is not a report spec" in text
    assert len(got) == 9


@pytest.mark.parametrize("body, expected", [
    ("jobs: {a: x.yaml}\n", "loupe_station: missing field"),
    ("loupe_station: 2\njobs: {a: x.yaml}\n", "loupe_station: schema version 2 is not supported"),
    ("loupe_station: 1\n", "jobs: missing field"),
    ("loupe_station: 1\njobs: {}\nsource: folder:i\n", "jobs: Dictionary should have at least 1 item"),
    ("loupe_station: 1\njobs: {a: 3}\n", "jobs.a: Input should be a valid string"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\nsource: folder:images\ntrigger: sometimes\n",
     "trigger: Input should be 'free-run', 'software' or 'source'"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\nsource: folder:images\nbuffer: 0\n",
     "buffer: Input should be greater than or equal to 1"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\nsource: folder:images\nbufer: 3\n", "bufer: unknown field"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\n", "source: missing field"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\nsource: {spec: folder:images, watchh: true}\n",
     "source.watchh: unknown option"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\nsource: folder:images\nhmi: {listen: 127.0.0.1:8080}\n",
     "hmi.listen: the operator screen (127.0.0.1:8080) needs the 'http' line adapter: install loupe-hmi"),
    ("loupe_station: 1\njobs: {a: four-holes.yaml}\nsource: folder:images\nhmi: {listen: nowhere}\n",
     "hmi.listen: String should match pattern"),
    ("loupe_station: 1\njobs: [a, b\n", "YAML syntax error: line 3"),
    ("- 1\n- 2\n", "a station file is a mapping of fields, got list"),
    ("loupe_station: 1\nx: " + "[" * 60 + "]" * 60 + "\n", "nested more than"),
])
def test_file_level_errors(line_pm, tmp_path, body, expected):
    write_station(tmp_path)
    p = tmp_path / "s.yaml"
    p.write_text(body)
    got = problems(line_pm, p)
    assert any(line.startswith(f"{p}: ") and expected in line for line in got), got


def test_size_limit_and_overrides(line_pm, tmp_path):
    path = write_station(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text("loupe_station: 1\n#" + "x" * 300_000 + "\n")
    assert "at most" in problems(line_pm, big)[0]
    got = problems(line_pm, path, source="nope:x", io=["bogus://1:2"], store=["sqlite:"])
    text = "\n".join(got)
    assert "--source: 'nope:x' is not a source spec" in text
    assert "--io bogus://1:2: 'bogus://1:2': no line adapter" in text
    assert "--store sqlite:: 'sqlite:' is not a report spec" in text
    assert "--hmi: the operator screen" in problems(line_pm, path, hmi="127.0.0.1:9")[0]


def test_serve_exits_2_with_the_problems(tmp_path):
    path = write_station(tmp_path, io="[tcp://127.0.0.1:0]")
    path.write_text(path.read_text().replace("buffer: 4", "buffer: many"))
    r = run_loupe("serve", path, env=SERVE_ENV, timeout=120)
    assert r.returncode == 2
    assert f"{path}: buffer: Input should be a valid integer" in r.stderr and "Traceback" not in r.stderr


def test_hmi_is_passed_on_to_an_http_adapter(line_pm, tmp_path):
    from host import LineAdapter, hookimpl

    class Screen(LineAdapter):  # what loupe-hmi registers: an adapter with the scheme http
        scheme = "http"
        wants_frames = True

        def start(self):
            pass

    class ScreenPlugin:
        @hookimpl
        def loupe_line_adapter(self, register):
            register(Screen)

    line_pm.register_plugin(ScreenPlugin(), name="screen")
    path = write_station(tmp_path, extra="hmi: {listen: 127.0.0.1:8080}\n")
    cfg = load_station(path, line_pm.catalogue)
    assert [(s.scheme, s.target) for s in cfg.io] == [("http", "//127.0.0.1:8080")]
    cfg = load_station(path, line_pm.catalogue, hmi="0.0.0.0:9000", io=["tcp://127.0.0.1:0"])
    assert [s.spec for s in cfg.io] == ["tcp://127.0.0.1:0", "http://0.0.0.0:9000"]
