"""The OPC UA adapter, tested with asyncua's client running in another process.

One real station (host.core.station, the example's classical recipes) serves OPC UA on a free
loopback port for the whole module (an asyncua server takes seconds to build its address
space): anonymous and username/password identities, a None and a Basic256Sha256
SignAndEncrypt endpoint. Each test runs a client scenario in a subprocess and checks what it
printed against the station's own results.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from line_support import SERVE_ENV, loupe_exe, write_station

pytestmark = pytest.mark.timeout(300)

CLIENT = r'''
import asyncio, json, os, sys, time
from pathlib import Path
from asyncua import Client, ua

url, scenario = sys.argv[1], sys.argv[2]
out = {}

async def nodes(c):
    idx = await c.get_namespace_index("urn:loupe:station")
    vs = await c.nodes.objects.get_child(f"{idx}:VisionSystem")
    n = lambda *p: vs.get_child([f"{idx}:{x}" for x in p])
    return idx, vs, n

async def value(n, *p):
    return await (await n(*p)).read_value()

async def call(node, name, idx, *args):
    try:
        r = await node.call_method(f"{idx}:{name}", *args)
        return ["ok", r]
    except ua.UaStatusCodeError as e:
        return ["error", type(e).__name__]

async def subscribe(c, idx, vs, interval=0):
    q = asyncio.Queue()
    class H:
        def event_notification(self, ev):
            q.put_nowait({"ResultId": ev.ResultId, "Verdict": ev.Verdict, "IsPartGood": ev.IsPartGood,
                          "ResultState": ev.ResultState, "InternalRecipeId": ev.InternalRecipeId,
                          "names": list(ev.MeasurementNames), "values": list(ev.MeasurementValues),
                          "duration": ev.ProcessingDuration})
    sub = await c.create_subscription(interval, H())
    et = await c.nodes.types.get_child(["0:EventTypes", "0:BaseEventType", f"{idx}:ResultReadyEventType"])
    await sub.subscribe_events(vs, et)
    return q

async def wait_state(n, want, timeout=20):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        s = await value(n, "State")
        if s == want:
            return s
        await asyncio.sleep(0.02)
    return await value(n, "State")

async def main():
    c = Client(url, timeout=10)
    if scenario == "encrypted":
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID
        d = Path(os.environ["CLIENT_PKI"]); d.mkdir(exist_ok=True)
        await setup_self_signed_certificate(d / "key.pem", d / "cert.der", "urn:loupe:test:client", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "test client"})
        c.application_uri = "urn:loupe:test:client"
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{d / 'cert.der'},{d / 'key.pem'}")
        c.set_user("op"); c.set_password("secret")
    if scenario == "bad_password":
        c.set_user("op"); c.set_password("wrong")
        try:
            await c.connect()
            out["connected"] = True
            await c.disconnect()
        except Exception as e:
            out["connected"] = False
            out["error"] = type(e).__name__
        print(json.dumps(out)); return
    await c.connect()
    try:
        idx, vs, n = await nodes(c)
        amsm = await n("VisionStateMachine", "AutomaticModeStateMachine")
        vsm = await n("VisionStateMachine")
        rm = await n("RecipeManagement")
        res = await n("ResultManagement")
        if scenario == "encrypted":
            out["policy"] = c.security_policy.URI
            q = await subscribe(c, idx, vs)
            out["start"] = await call(amsm, "StartSingleJob", idx)
            out["event"] = await asyncio.wait_for(q.get(), 20)
            out["ack"] = await call(res, "ResultAcknowledge", idx, out["start"][1])
        elif scenario == "main":
            out["browse"] = sorted([(await ch.read_browse_name()).Name for ch in await vs.get_children()])
            out["State"] = await value(n, "State")
            out["CurrentState"] = await value(n, "VisionStateMachine", "AutomaticModeStateMachine", "CurrentState")
            out["CurrentJob"] = await value(n, "CurrentJob")
            out["Jobs"] = await value(n, "Jobs")
            q = await subscribe(c, idx, vs)
            out["start"] = await call(amsm, "StartSingleJob", idx)
            out["event"] = await asyncio.wait_for(q.get(), 20)
            out["last"] = {k: await value(n, "ResultManagement", "LastResult", k) for k in
                           ("ResultId", "ResultState", "IsPartGood", "Verdict", "InternalRecipeId",
                            "MeasurementNames", "MeasurementValues")}
            out["last"]["CreationTime"] = (await value(n, "ResultManagement", "LastResult", "CreationTime")).timestamp()
            out["last"]["ProcessingDuration"] = await value(n, "ResultManagement", "LastResult", "ProcessingTimes",
                                                            "ProcessingDuration")
            out["ack"] = await call(res, "ResultAcknowledge", idx, out["start"][1])
            out["ack_again"] = await call(res, "ResultAcknowledge", idx, "")
            out["ack_bad"] = await call(res, "ResultAcknowledge", idx, "x1")
            out["select"] = await call(rm, "SelectJob", idx, "three")
            out["CurrentJob2"] = await value(n, "CurrentJob")
            out["select_bad"] = await call(rm, "SelectJob", idx, "nope")
            out["continuous"] = await call(amsm, "StartContinuous", idx)
            out["state_cont"] = await wait_state(n, "ContinuousExecution")
            out["start_busy"] = await call(amsm, "StartSingleJob", idx)
            out["select_busy"] = await call(rm, "SelectJob", idx, "four")
            out["stop"] = await call(amsm, "Stop", idx)
            out["state_stop"] = await wait_state(n, "Ready")
            acks = 0
            while (await call(res, "ResultAcknowledge", idx, ""))[0] == "ok":
                acks += 1
            out["drained"] = acks
            out["select_back"] = await call(rm, "SelectJob", idx, "four")
            out["reset"] = await call(vsm, "Reset", idx)
            out["reset_counters"] = await call(res, "ResetCounters", idx)
        elif scenario == "no_ack":
            q = await subscribe(c, idx, vs)
            out["starts"] = [await call(amsm, "StartSingleJob", idx) for _ in range(int(os.environ["N"]))]
            out["events"] = []
            while True:
                try:
                    out["events"].append((await asyncio.wait_for(q.get(), 3))["ResultId"])
                except asyncio.TimeoutError:
                    break
            out["BufferOverrun"] = await value(n, "BufferOverrun")
            out["MissedTriggers"] = await value(n, "MissedTriggers")
            out["ResultsWaiting"] = await value(n, "ResultsWaiting")
            out["State"] = await value(n, "State")
        elif scenario == "slow_cycle":
            # a PLC's usual publishing interval (here 5 s): ResultReady must not wait for the next cycle
            q = await subscribe(c, idx, vs, interval=5000)
            await asyncio.sleep(0.5)  # past the subscription's first cycle
            t0 = time.monotonic()
            out["start"] = await call(amsm, "StartSingleJob", idx)
            out["event"] = (await asyncio.wait_for(q.get(), 20))["ResultId"]
            out["seconds"] = time.monotonic() - t0
            out["ack"] = await call(res, "ResultAcknowledge", idx, out["start"][1])
        elif scenario == "vanish":
            # trigger, then leave abruptly (no acknowledgement, no clean disconnect)
            out["start"] = await call(amsm, "StartSingleJob", idx)
            print(json.dumps(out), flush=True)
            os._exit(0)
        elif scenario == "recover":
            out["LastResultId"] = await value(n, "ResultManagement", "LastResult", "ResultId")
            out["waiting"] = await value(n, "ResultsWaiting")
            acks = []
            while True:
                r = await call(res, "ResultAcknowledge", idx, "")
                if r[0] != "ok":
                    break
                acks.append(r)
            out["acks"] = len(acks)
            out["reset_counters"] = await call(res, "ResetCounters", idx)
            await asyncio.sleep(0.3)
            out["BufferOverrun"] = await value(n, "BufferOverrun")
            q = await subscribe(c, idx, vs)
            out["start"] = await call(amsm, "StartSingleJob", idx)
            out["event"] = (await asyncio.wait_for(q.get(), 20))["ResultId"]
            out["ack"] = await call(res, "ResultAcknowledge", idx, out["start"][1])
    finally:
        await c.disconnect()
    print(json.dumps(out, default=str))

asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url: str, scenario: str, **env) -> dict:
    p = subprocess.run([sys.executable, "-c", CLIENT, url, scenario], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in env.items()}})
    assert p.returncode == 0, p.stdout + p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["shared", "own"])
def ua_station(tmp_path_factory, request):
    """The OPC UA server in the station's process, and in a process of its own (``process: own``)."""
    from host import create_plugin_manager
    from host.core.station import Station, load_station
    import loupe_classical.plugin as classical
    import loupe_line.plugin as line

    pm = create_plugin_manager(autoload=False)
    pm.register_plugin(classical, name="classical", distribution="loupe-classical")
    pm.register_plugin(line, name="line", distribution="loupe-line")
    pm.check_pending()
    d = tmp_path_factory.mktemp("opcua")
    port = free_port()
    spec = f"opcua://127.0.0.1:{port}"
    path = write_station(d, buffer=3, io=f'[{{spec: "{spec}", security: [none, sign-encrypt], username: op, '
                                         f'password_env: LOUPE_TEST_OPCUA_PASSWORD, anonymous: true, '
                                         f'measurements: [holes.count, light.mean], process: {request.param}}}]')
    os.environ["LOUPE_TEST_OPCUA_PASSWORD"] = "secret"
    st = Station(load_station(path, pm.catalogue), pm)
    st.start()
    st.url = f"opc.tcp://127.0.0.1:{port}/loupe/"
    st.spec = spec
    st.dir = d
    yield st
    st.close()


def drain(st):
    while True:
        try:
            st.acknowledge()
        except Exception:
            return


def test_methods_variables_and_result_ready_event(ua_station):
    st = ua_station
    out = client(st.url, "main")
    assert {"VisionStateMachine", "RecipeManagement", "ResultManagement", "State", "CurrentJob",
            "Jobs"} <= set(out["browse"])
    assert out["State"] == out["CurrentState"] == "Ready"
    assert out["CurrentJob"] == "four" and out["Jobs"] == ["four", "three"]
    assert out["start"][0] == "ok"
    rid = int(out["start"][1])
    r = st.result(rid)
    ev, last = out["event"], out["last"]
    assert ev["ResultId"] == last["ResultId"] == str(rid)
    assert ev["Verdict"] == last["Verdict"] == r.verdict == "pass"
    assert ev["IsPartGood"] is True and ev["ResultState"] == last["ResultState"] == 1
    assert ev["InternalRecipeId"] == last["InternalRecipeId"] == "four"
    assert ev["names"] == last["MeasurementNames"] == ["holes.count", "light.mean"]
    assert ev["values"][0] == 4.0 and ev["values"][1] == pytest.approx(r.measurements["light.mean"])
    assert last["CreationTime"] == pytest.approx(r.created, abs=0.01)
    assert last["ProcessingDuration"] > 0
    assert out["ack"][0] == "ok" and r.acknowledged is True
    assert out["ack_again"][0] == "error" and "NoData" in out["ack_again"][1]
    assert "InvalidArgument" in out["ack_bad"][1]
    assert out["select"][0] == "ok" and out["CurrentJob2"] == "three"
    assert "InvalidArgument" in out["select_bad"][1]
    assert out["continuous"][0] == "ok" and out["state_cont"] == "ContinuousExecution"
    assert "InvalidState" in out["start_busy"][1] and "InvalidState" in out["select_busy"][1]
    assert out["stop"][0] == "ok" and out["state_stop"] == "Ready"
    assert out["drained"] >= 1  # continuous mode filled the buffer; the client released it
    assert out["select_back"][0] == "ok" and out["reset"][0] == "ok" and out["reset_counters"][0] == "ok"
    assert st.job == "four" and st.state == "Ready"
    assert st.status()["adapters"][st.spec]["event_errors"] == 0


def test_result_ready_does_not_wait_for_the_publishing_cycle(ua_station):
    """The server sends ResultReady as the result is ready, whatever the subscription's publishing
    interval: a 5 s cycle would deliver it ~4.5 s after the trigger."""
    drain(ua_station)
    out = client(ua_station.url, "slow_cycle")
    assert out["start"][0] == "ok" and out["event"] == str(out["start"][1])
    assert out["seconds"] < 2.5, out
    assert out["ack"][0] == "ok"


def test_plc_never_acknowledges_then_recovers(ua_station):
    st = ua_station
    drain(st)
    st.reset_counters()
    first = st.status()["results_issued"]
    out = client(st.url, "no_ack", N=6)
    ok = [s for s in out["starts"] if s[0] == "ok"]
    refused = [s for s in out["starts"] if s[0] == "error"]
    assert len(ok) == 3 and len(refused) == 3  # buffer 3: the rest are missed, never silently dropped
    assert all("ResourceUnavailable" in s[1] for s in refused)
    assert sorted(out["events"]) == sorted(s[1] for s in ok)
    assert out["BufferOverrun"] is True and out["MissedTriggers"] == 3 and out["ResultsWaiting"] == 3
    assert out["State"] == "Ready" and st.status()["missed"] == 3
    # a client that triggers and vanishes mid-run, then another one that picks up the results
    drain(st)
    v = client(st.url, "vanish")
    assert v["start"][0] == "ok"
    rec = client(st.url, "recover")
    assert rec["acks"] >= 1 and st.result(int(v["start"][1])).acknowledged
    assert rec["BufferOverrun"] is False
    assert rec["event"] == rec["start"][1] and rec["ack"][0] == "ok"
    assert st.status()["results_issued"] == first + 5 and st.state == "Ready"
    deadline = time.monotonic() + 10
    while st.status()["adapters"][st.spec]["connected"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert st.status()["adapters"][st.spec]["connected"] is False  # every client gone


def test_username_password_and_sign_and_encrypt(ua_station):
    st = ua_station
    drain(st)
    out = client(st.url, "encrypted", CLIENT_PKI=st.dir / "client-pki")
    assert out["policy"].endswith("#Basic256Sha256")
    assert out["start"][0] == "ok" and out["event"]["ResultId"] == out["start"][1]
    assert out["ack"][0] == "ok"
    assert (st.dir / "opcua-pki" / "server-cert.der").is_file()  # generated beside the station
    assert oct((st.dir / "opcua-pki" / "server-key.pem").stat().st_mode & 0o777) == "0o600"
    bad = client(st.url, "bad_password")
    assert bad["connected"] is False


def test_plc_command_over_opcua(ua_station):
    st = ua_station
    drain(st)
    port = st.url.rsplit(":", 1)[1].split("/")[0]
    bad = subprocess.run(loupe_exe() + ["line", "plc", "--io", f"opcua://127.0.0.1:{port}", "--count", "1"],
                         env={**os.environ, **SERVE_ENV, "LOUPE_PLC_USER": "op", "LOUPE_PLC_PASSWORD": "no"},
                         capture_output=True, text=True, timeout=180)
    assert bad.returncode == 2 and "cannot open an OPC UA session" in bad.stderr, bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
    nojob = subprocess.run(loupe_exe() + ["line", "plc", "--io", f"opcua://127.0.0.1:{port}", "--count", "1",
                                          "--job", "nope"],
                           env={**os.environ, **SERVE_ENV, "LOUPE_PLC_USER": "op", "LOUPE_PLC_PASSWORD": "secret"},
                           capture_output=True, text=True, timeout=180)
    assert nojob.returncode == 2 and "--job nope: the station refused it (ER,JOB,unknown_job)" in nojob.stderr, \
        nojob.stderr[-2000:]
    assert "Traceback" not in nojob.stderr
    p = subprocess.run(loupe_exe() + ["line", "plc", "--io", f"opcua://127.0.0.1:{port}", "--rate", "20",
                                      "--count", "12", "--ack", "--job", "three", "--json"],
                       env={**os.environ, **SERVE_ENV, "LOUPE_PLC_USER": "op", "LOUPE_PLC_PASSWORD": "secret"},
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    s = json.loads(p.stdout)
    assert s["handshake_ok"] and s["triggers"] == 12 and s["results"] == 12 and s["missed"] == 0
    assert s["state"] == "Ready" and s["last_result_id"] - s["first_result_id"] == 11
    assert sum(s["verdicts"].values()) == 12 and s["latency_ms"]["p50"] > 0
    assert st.job == "three"
    st.select_job("four")
