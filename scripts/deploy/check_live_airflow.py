"""Deployment check: the DAGs on a live Airflow, not `dags test`.

For each runner (local, then docker through a Docker-API socket such as podman's): make a tiny
project (tiny BEIR data, a tiny random BERT: tests/tiny.py), start `airflow standalone` on a
throwaway AIRFLOW_HOME with the repository's dags/, and through the REST API v2 only:
  1. unpause freshen_cache_refresh (its latest cron tick may run at once: it must skip, not fail)
     and freshen_train; trigger freshen_train; every task instance must succeed;
  2. the registry's `champion` alias must have moved to the new version (read from the MLflow store);
  3. the `freshen_champion` Asset event must have started one freshen_cache_refresh run that
     succeeds with K mapped shards (K = orchestration.num_shards from $FRESHEN_SET, params.yaml
     says otherwise) and serves the new champion;
  4. a second train run whose challenger cannot meet promote.min_improvement (1.0 of an nDCG)
     must leave the champion, the Asset and the refresh DAG untouched;
  5. a corpus update (documents removed, edited, added in the tiny dataset): a triggered
     freshen_corpus_update run must emit one `freshen_corpus` event counting them, which must
     start one freshen_cache_refresh run that serves the new version (no removed id; only the
     added and edited documents encoded), its MLflow parent run tagged with that reason.
Every process started is stopped (SIGTERM, then SIGKILL) also on failure; none may be left.
The summary (JSON + text, durations per phase) goes to benchmarks/results/deployment/.

    python scripts/deploy/check_live_airflow.py --runner local
    python scripts/deploy/check_live_airflow.py --runner docker --docker-url unix:///run/freshen-podman.sock \\
        --image localhost/freshen:cpu
Exit status: 0 when every runner asked for passed (or was reported not run with --allow-not-run)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from airflow_env import airflow_env  # noqa: E402
from airflow_service import Api, Processes, airflow_command, airflow_config, free_port  # noqa: E402
from tiny import make_project  # noqa: E402

TRAIN, REFRESH, CORPUS = "freshen_train", "freshen_cache_refresh", "freshen_corpus_update"
NUM_SHARDS = 3  # given through $FRESHEN_SET; the project's params.yaml keeps the repository's value
CONTAINER_UID = 1000  # the component image runs as this user
USER = "freshen"


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Report:
    """Phases with their durations, facts measured on the way, and the verdict of one runner."""

    def __init__(self, runner: str):
        self.data: dict = {"runner": runner, "status": "running", "phases": [], "facts": {}}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.monotonic()
        entry = {"phase": name, "ok": False}
        self.data["phases"].append(entry)
        print(f"[{self.data['runner']}] {name} ...", flush=True)
        try:
            yield
            entry["ok"] = True
        finally:
            entry["seconds"] = round(time.monotonic() - start, 1)
            print(
                f"[{self.data['runner']}] {name}: {'ok' if entry['ok'] else 'FAILED'} ({entry['seconds']}s)", flush=True
            )

    def fact(self, **values) -> None:
        self.data["facts"].update(values)


# ---------------------------------------------------------------- the project and its services


def prepare_project(root: Path, runner: str) -> dict:
    """The tiny project of tests/tiny.py (data and model inside it, named by relative paths),
    retried once after 5 s, DVC initialised; owned by the image's user for the docker runner."""
    make_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["orchestration"].update(retries=1, retry_delay_s=5)
    expect(params["orchestration"]["num_shards"] != NUM_SHARDS, "params.yaml must differ from $FRESHEN_SET's K")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    if runner == "docker":  # the image's user writes the outputs
        for path in [root, *root.rglob("*")]:
            os.chown(path, CONTAINER_UID, CONTAINER_UID, follow_symlinks=False)
    return params


def deployment_set(runner: str, args, mlflow_uri: str | None) -> dict:
    """$FRESHEN_SET of the deployment: what differs from the project's params.yaml."""
    values: dict = {"orchestration.num_shards": NUM_SHARDS}
    if runner == "docker":
        values.update(
            {
                "orchestration.runner": "docker",
                "orchestration.image": args.image,
                "orchestration.docker.url": args.docker_url,
                "orchestration.docker.network": "host",  # the containers reach the MLflow server on 127.0.0.1
                "orchestration.mlflow_tracking_uri": mlflow_uri,
            }
        )
    return values


def start_mlflow_server(procs: Processes, work: Path, port: int) -> str:
    """An MLflow tracking server (SQLite store, proxied artifacts) that workers and containers share."""
    store = work / "mlflow"
    store.mkdir()
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "art")]
    argv += ["--workers", "1"]
    procs.start("mlflow-server", argv, cwd=work)
    uri = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{uri}/health", timeout=5).ok:
                return uri
        time.sleep(2)
    raise TimeoutError(f"MLflow server on {uri} did not start (see its log)")


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


# ---------------------------------------------------------------- the check of one runner


def runs_of_type(api: Api, dag_id: str, run_type: str) -> list[dict]:
    return [r for r in api.runs(dag_id) if r["run_type"] == run_type]


def wait_for_new_run(api: Api, dag_id: str, run_type: str, known: set[str], timeout_s: float) -> dict | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [r for r in runs_of_type(api, dag_id, run_type) if r["dag_run_id"] not in known]
        if new:
            return new[0]
        time.sleep(3)
    return None


def update_corpus(data: Path) -> dict[str, list[str]]:
    """A new corpus version in place (the owner stays the image's user): two unjudged documents
    removed, two edited, three added. Returns the ids of each kind."""
    judged = {line.split("\t")[1] for f in (data / "qrels").glob("*.tsv") for line in f.read_text().splitlines()[1:]}
    docs = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines() if line.strip()]
    change = {
        "removed": [d["_id"] for d in docs if d["_id"] not in judged][-2:],
        "edited": [docs[0]["_id"], docs[1]["_id"]],
    }
    docs = [d for d in docs if d["_id"] not in change["removed"]]
    for d in docs[:2]:
        d["text"] += " revised after a new study"
    change["added"] = [f"new{i}" for i in range(3)]
    docs += [
        {"_id": i, "title": f"update {i}", "text": f"a document added in the corpus update {i}"}
        for i in change["added"]
    ]
    with open(data / "corpus.jsonl", "w") as fh:  # truncated in place: the owner stays
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    return change


def remove_containers(docker_url: str, project: Path) -> list[str]:
    """Remove the containers that mount `project` (the steps of this check, left running or
    stopped by an interrupted run); returns their ids."""
    import docker

    client = docker.DockerClient(base_url=docker_url)
    ours = [
        c
        for c in client.containers.list(all=True)
        if any(m.get("Source") == str(project) for m in c.attrs.get("Mounts") or [])
    ]
    for container in ours:
        container.remove(force=True)
    return [c.short_id for c in ours]


def error_lines(home: Path, dag_id: str, run_id: str) -> int:
    """Lines logged at level error in the task logs of one run, though every task succeeded
    (what a step prints on stderr lands there: progress bars, library warnings)."""
    folder = home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return sum(f.read_text(errors="replace").count('"level":"error"') for f in folder.rglob("*.log"))


def check_runner(runner: str, args, work: Path, report: Report) -> None:
    project = work / "project"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRESHEN_", "MLFLOW_"))}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "components"), *filter(None, [args.extra_pythonpath])])
    procs = Processes(env, work / "logs")
    try:
        with report.phase("tiny project"):
            params = prepare_project(project, runner)
        name = params["promote"]["registered_model"]
        if runner == "docker":
            with report.phase("mlflow server"):
                mlflow_uri = start_mlflow_server(procs, work, free_port())
        else:
            mlflow_uri = f"sqlite:///{project / 'mlflow.db'}"  # where the steps' tracking.setup puts it
        port, password = free_port(), os.urandom(12).hex()
        procs.env.update(airflow_env(work / "airflow-home"))
        procs.env.update(airflow_config(work / "airflow-home", port, USER, password))
        procs.env.update(
            FRESHEN_PROJECT_DIR=str(project), FRESHEN_SET=json.dumps(deployment_set(runner, args, mlflow_uri))
        )
        if runner == "docker":
            procs.env.update(DOCKER_HOST=args.docker_url, FRESHEN_HOST_PROJECT_DIR=str(project))
        report.fact(freshen_set=json.loads(procs.env["FRESHEN_SET"]), api_port=port, mlflow=mlflow_uri)
        api = Api(f"http://127.0.0.1:{port}", USER, password)

        with report.phase("airflow standalone up, DAGs parsed"):
            procs.start("airflow-standalone", [*airflow_command(), "standalone"], cwd=work)
            api.wait_ready([TRAIN, REFRESH, CORPUS], timeout_s=args.start_timeout)

        with report.phase("unpause; the refresh DAG's cron tick skips before any champion"):
            api.unpause(REFRESH)
            tick = wait_for_new_run(api, REFRESH, "scheduled", set(), timeout_s=45)
            if tick is not None:
                done = api.wait_run(REFRESH, tick["dag_run_id"], args.run_timeout)
                states = api.task_states(REFRESH, tick["dag_run_id"])
                expect(done["state"] == "success", f"cron-tick refresh run {done['state']}: {states}")
                expect(states[("fetch_champion", -1)] == "skipped", f"fetch_champion not skipped: {states}")
                expect("failed" not in states.values(), f"a failed task in the cron-tick run: {states}")
            report.fact(cron_tick_run=tick["dag_run_id"] if tick else None)
            api.unpause(TRAIN)

        champion_before = alias_version(mlflow_client(mlflow_uri), name, "champion")
        with report.phase("train run 1: every task succeeds"):
            run_id = api.trigger(TRAIN, {})
            done = api.wait_run(TRAIN, run_id, args.run_timeout)
            states = api.task_states(TRAIN, run_id)
            expect(done["state"] == "success", f"train run {done['state']}: {states}")
            # the tiny project has no dvc.yaml, so there are no DVC stages to record the outputs in
            expect(states.pop(("record_outputs", -1)) == "skipped", "record_outputs ran without a dvc.yaml")
            expect(set(states.values()) == {"success"}, f"not every other task succeeded: {states}")
            report.fact(train_run_1=run_id, train_tasks=len(states))
            report.fact(train_run_1_error_log_lines=error_lines(work / "airflow-home", TRAIN, run_id))

        with report.phase("champion moved (MLflow registry)"):
            client = mlflow_client(mlflow_uri)
            champion = alias_version(client, name, "champion")
            expect(champion is not None and champion != champion_before, f"champion {champion_before} -> {champion}")
            report.fact(champion_before=champion_before, champion_after=champion)
            events = api.asset_events("freshen_champion")
            expect(len(events) == 1 and events[0]["extra"]["version"] == champion, f"freshen_champion events: {events}")

        with report.phase(f"asset-triggered refresh with K={NUM_SHARDS} mapped shards"):
            refresh = wait_for_new_run(api, REFRESH, "asset_triggered", set(), timeout_s=180)
            expect(refresh is not None, "no asset-triggered freshen_cache_refresh run")
            rid = refresh["dag_run_id"]
            done = api.wait_run(REFRESH, rid, args.run_timeout)
            states = api.task_states(REFRESH, rid)
            expect(done["state"] == "success", f"refresh run {done['state']}: {states}")
            shards = sorted(i for (task, i), s in states.items() if task == "reembed_shard" and s == "success")
            expect(shards == list(range(NUM_SHARDS)), f"reembed_shard map indexes that succeeded: {shards}")
            expect(set(states.values()) == {"success"}, f"not every refresh task succeeded: {states}")
            trigger = api.triggering_events(REFRESH, rid)
            expect([e["extra"]["version"] for e in trigger] == [champion], f"triggering events: {trigger}")
            pointer = json.loads((project / params["orchestration"]["serving_dir"] / "current.json").read_text())
            expect(pointer["champion_version"] == champion, f"serving pointer: {pointer}")
            merged = json.loads((project / params["orchestration"]["refresh_dir"] / "manifest.json").read_text())
            expect(merged["num_shards"] == NUM_SHARDS, f"merged cache manifest: {merged}")
            report.fact(refresh_run=rid, mapped_shards=len(shards), serving_folder=pointer["folder"])
            report.fact(refresh_error_log_lines=error_lines(work / "airflow-home", REFRESH, rid))

        with report.phase("train run 2 (worse challenger): champion and refresh untouched"):
            run_id = api.trigger(TRAIN, {"train.steps": 2, "promote.min_improvement": 1.0})
            done = api.wait_run(TRAIN, run_id, args.run_timeout)
            states = api.task_states(TRAIN, run_id)
            expect(done["state"] == "success", f"train run 2 {done['state']}: {states}")
            expect(states.pop(("publish_champion", -1)) == "skipped", "publish_champion ran without a new champion")
            expect(states.pop(("record_outputs", -1)) == "skipped", "record_outputs ran for overridden params")
            expect(set(states.values()) == {"success"}, f"not every other task succeeded: {states}")
            time.sleep(args.settle)  # time for a wrongly emitted Asset event to start a refresh
            client = mlflow_client(mlflow_uri)
            challenger = alias_version(client, name, "challenger")
            expect(alias_version(client, name, "champion") == champion, "champion moved to a worse challenger")
            expect(challenger not in (None, champion), f"the second run registered no challenger ({challenger})")
            expect(len(api.asset_events("freshen_champion")) == 1, "a freshen_champion event without a new champion")
            refreshes = runs_of_type(api, REFRESH, "asset_triggered")
            expect([r["dag_run_id"] for r in refreshes] == [rid], f"refresh runs: {refreshes}")
            after = json.loads((project / params["orchestration"]["serving_dir"] / "current.json").read_text())
            expect(after["folder"] == pointer["folder"], "the serving index changed")
            report.fact(train_run_2=run_id, challenger=challenger)

        with report.phase("corpus update: announced by freshen_corpus_update, served by the refresh it triggers"):
            change = update_corpus(project / params["data"]["local_dir"])
            known = {r["dag_run_id"] for r in api.runs(REFRESH)}
            api.unpause(CORPUS)
            run_id = api.trigger(CORPUS, {})
            done = api.wait_run(CORPUS, run_id, args.run_timeout)
            states = api.task_states(CORPUS, run_id)
            expect(done["state"] == "success", f"corpus run {done['state']}: {states}")
            expect(set(states.values()) == {"success"}, f"not every corpus task succeeded: {states}")
            [event] = api.asset_events("freshen_corpus") or [None]
            expect(event is not None, "no freshen_corpus event")
            counts = {k: event["extra"][k] for k in change}
            expect(counts == {k: len(v) for k, v in change.items()}, f"freshen_corpus event: {event['extra']}")
            new_sha = event["extra"]["corpus_sha256"]
            refresh = wait_for_new_run(api, REFRESH, "asset_triggered", known, timeout_s=180)
            expect(refresh is not None, "no freshen_cache_refresh run after the corpus event")
            rid = refresh["dag_run_id"]
            done = api.wait_run(REFRESH, rid, args.run_timeout)
            states = api.task_states(REFRESH, rid)
            expect(done["state"] == "success", f"corpus refresh run {done['state']}: {states}")
            expect(set(states.values()) == {"success"}, f"not every corpus refresh task succeeded: {states}")
            trigger = api.triggering_events(REFRESH, rid)
            expect([e["extra"].get("corpus_sha256") for e in trigger] == [new_sha], f"triggering events: {trigger}")
            serving = project / params["orchestration"]["serving_dir"]
            pointer = json.loads((serving / "current.json").read_text())
            expect(pointer["corpus_sha256"] == new_sha and pointer["champion_version"] == champion, f"{pointer}")
            served = serving / pointer["folder"]
            ids = json.loads((served / "ids.json").read_text())
            expect(not set(change["removed"]) & set(ids), "a removed document is still served")
            expect(set(change["added"]) <= set(ids), "an added document is not served")
            origin = json.loads((served / "manifest.json").read_text())["origin"]
            expect(origin["encoded"] == len(change["added"]) + len(change["edited"]), f"rows by origin: {origin}")
            client = mlflow_client(mlflow_uri)
            exp = client.get_experiment_by_name(params["mlflow"]["experiment"])
            parent = client.search_runs([exp.experiment_id], f"tags.`airflow.run_id` = '{rid}'")
            tags = parent[0].data.tags if parent else {}
            expect(tags.get("freshen.refresh.trigger") == "asset_triggered", f"refresh parent run tags: {tags}")
            expect("corpus version" in tags.get("freshen.refresh.reasons", ""), f"refresh parent run tags: {tags}")
            report.fact(corpus_run=run_id, corpus_refresh_run=rid, corpus_change={k: len(v) for k, v in change.items()})
            report.fact(corpus_refresh_rows=origin, corpus_refresh_reasons=tags["freshen.refresh.reasons"])
            report.fact(corpus_refresh_error_log_lines=error_lines(work / "airflow-home", REFRESH, rid))
    finally:
        with report.phase("stop every process started"):
            stopped = procs.stop(grace_s=args.grace)
            report.fact(sigkilled_after_grace=len(stopped["killed"]), processes_left=stopped["left"])
            if runner == "docker":
                report.fact(containers_left=remove_containers(args.docker_url, project))
            expect(not stopped["left"], f"processes still running after SIGKILL: {stopped['left']}")
            expect(not report.data["facts"].get("containers_left"), "step containers were left behind")


# ---------------------------------------------------------------- docker prerequisites, output, main


def docker_ready(args) -> str | None:
    """Why the docker runner cannot be checked now (None: it can); waits for the marker files."""
    deadline = _utc_today(args.wait_until) if args.wait_until else None
    while True:
        missing = [m for m in args.ready_markers if not Path(m).exists()]
        if not missing:
            break
        if deadline is None or datetime.now(timezone.utc) >= deadline:
            return f"not ready: {', '.join(missing)} missing"
        time.sleep(30)
    try:
        import airflow.providers.docker  # noqa: F401
    except ImportError:
        return "apache-airflow-providers-docker is not installed (pip install 'freshen[docker]')"
    return None


def _utc_today(hhmm: str) -> datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return datetime.now(timezone.utc).replace(hour=hour, minute=minute, second=0, microsecond=0)


def write_summary(reports: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_airflow.json").write_text(json.dumps(reports, indent=2) + "\n")
    lines = ["# Live Airflow check (scripts/deploy/check_live_airflow.py)", ""]
    for r in reports:
        lines.append(f"## runner {r['runner']}: {r['status'].upper()}  ({r.get('seconds', 0)} s)")
        if r.get("reason"):
            lines.append(f"reason: {r['reason']}")
        lines += [f"  {'ok  ' if p['ok'] else 'FAIL'} {p['seconds']:7.1f} s  {p['phase']}" for p in r["phases"]]
        lines += [f"  {k}: {json.dumps(v)}" for k, v in r["facts"].items()]
        lines.append("")
    (out / "live_airflow.txt").write_text("\n".join(lines))
    print("\n".join(lines))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runner", choices=["local", "docker", "both"], default="both")
    p.add_argument("--docker-url", default="unix:///run/freshen-podman.sock")
    p.add_argument("--image", default="localhost/freshen:cpu")
    p.add_argument("--ready-markers", nargs="*", default=[], help="files that must exist before the docker run")
    p.add_argument("--wait-until", help="UTC HH:MM: wait for the markers until then, else report docker not run")
    p.add_argument("--allow-not-run", action="store_true", help="a docker runner not ready is not a failure")
    p.add_argument("--extra-pythonpath", help="prepended to the Airflow processes' PYTHONPATH (e.g. a provider)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/deployment")
    p.add_argument("--work", type=Path, help="working folder (default: a new temporary one, removed after)")
    p.add_argument("--start-timeout", type=float, default=300)
    p.add_argument("--run-timeout", type=float, default=1500)
    p.add_argument("--settle", type=float, default=30, help="seconds to wait for a refresh that must not come")
    p.add_argument("--grace", type=float, default=20, help="seconds between SIGTERM and SIGKILL")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.extra_pythonpath:  # so that docker_ready finds a provider installed there
        sys.path.insert(0, args.extra_pythonpath)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # unwind through the finally blocks
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    runners = ["local", "docker"] if args.runner == "both" else [args.runner]
    reports, failed = [], False
    for runner in runners:
        report = Report(runner)
        start = time.monotonic()
        reason = docker_ready(args) if runner == "docker" else None
        if reason:
            report.data.update(status="not run", reason=reason)
            failed |= not args.allow_not_run
        else:
            work = args.work / runner if args.work else Path(tempfile.mkdtemp(prefix=f"freshen-live-{runner}-"))
            try:
                check_runner(runner, args, work, report)
                report.data["status"] = "passed"
            except Exception as exc:  # noqa: BLE001 - recorded in the summary, then the exit status
                report.data.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:3000])
                report.data["logs"] = str(work / "logs")
                failed = True
            else:
                if not args.work:
                    shutil.rmtree(work, ignore_errors=True)
        report.data["seconds"] = round(time.monotonic() - start, 1)
        report.data["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        reports.append(report.data)
    write_summary(reports, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
