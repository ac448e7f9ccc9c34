"""A throwaway Spark standalone cluster on loopback (1 master + N workers), started from the pyspark installation,
with spark-submit of lmrefinery jobs to it and a stop that leaves no process behind.

    python scripts/cluster.py submit --lake DIR [--workers 2] [--job jobs/dedup.py] [-- JOB ARGS...]
        start the cluster, spark-submit the job to it (code shipped as a --py-files zip), print the outcome, stop
    python scripts/cluster.py up [--workers 2]
        start the cluster, print its master URL and the spark-submit line to use, wait for Ctrl-C, stop

Every process it starts (master, workers, their executors and Python workers, spark-submit drivers) carries
LMR_CLUSTER_ID=<token> in its environment; `stop()` terminates the process groups it started, then SIGKILLs
whatever still carries the token, and checks that nothing does. Used by tests/test_cluster.py and
scripts/failure_drill.py; see docs/cluster.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
CODE_PACKAGES = ("jobs", "udfs", "model")
HOST = "127.0.0.1"


def spark_home() -> str:
    """SPARK_HOME of the pip-installed pyspark (its bin/spark-class and jars/)."""
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


def python_exe() -> str:
    return VENV_PY if os.path.exists(VENV_PY) else sys.executable


def spark_submit_exe() -> str:
    for cand in (os.path.join(REPO, ".venv", "bin", "spark-submit"),
                 os.path.join(os.path.dirname(sys.executable), "spark-submit"),
                 os.path.join(spark_home(), "bin", "spark-submit")):
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError("spark-submit not found (run scripts/setup.sh)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_code_zip(dest: str, packages=CODE_PACKAGES) -> str:
    """The repo's Python packages as one zip for `--py-files` (importable as jobs.*, udfs.*, model.*)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for pkg in packages:
            for dirpath, dirnames, files in os.walk(os.path.join(REPO, pkg)):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for fn in sorted(files):
                    if fn.endswith(".py"):
                        full = os.path.join(dirpath, fn)
                        zf.write(full, os.path.relpath(full, REPO))
    return dest


def get_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


# ---- processes by marker -----------------------------------------------------------------------------------------
def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def marked_pids(token: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds LMR_CLUSTER_ID=<token>."""
    want = f"LMR_CLUSTER_ID={token}".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        if want not in _read(f"/proc/{name}/environ").split(b"\0"):
            continue
        stat = _read(f"/proc/{name}/stat").decode(errors="replace")
        if stat and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            out.append(int(name))
    return sorted(out)


def cmdline(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a]


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] != "Z"


class Submission:
    """A running or finished spark-submit (its own process group; stdout+stderr in `log_path`)."""

    def __init__(self, proc: subprocess.Popen, log_path: str, ui_port: int | None, argv: list[str]):
        self.proc, self.log_path, self.ui_port, self.argv = proc, log_path, ui_port, argv
        self.t0 = time.time()
        self.wall_s: float | None = None

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout=timeout)
        if self.wall_s is None:
            self.wall_s = round(time.time() - self.t0, 1)
        return rc

    @property
    def returncode(self):
        return self.proc.poll()

    def log(self) -> str:
        return _read(self.log_path).decode(errors="replace")

    def cluster_app_id(self) -> str | None:
        """The application id the master gave this driver (from the driver's log)."""
        m = re.search(r"Connected to Spark cluster with app ID (app-[0-9-]+)", self.log())
        return m.group(1) if m else None

    def kill(self) -> None:
        """SIGKILL the driver: the spark-submit JVM and the Python driver it started (one process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(timeout=30)

    # driver UI REST API (only while the driver lives)
    def app(self) -> str | None:
        try:
            apps = get_json(f"http://{HOST}:{self.ui_port}/api/v1/applications")
            return apps[0]["id"] if apps else None
        except Exception:
            return None

    def api(self, path: str):
        app = self.app()
        if app is None:
            return None
        try:
            return get_json(f"http://{HOST}:{self.ui_port}/api/v1/applications/{app}/{path}")
        except Exception:
            return None


class StandaloneCluster:
    """`with StandaloneCluster(workdir) as c: c.submit("jobs/dedup.py", ["--lake", d]).wait()`."""

    def __init__(self, workdir: str | None = None, workers: int = 2, cores: int = 1, memory: str = "1g",
                 executor_memory: str = "768m", daemon_memory: str = "256m"):
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="lmr-cluster-"))
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.executor_memory, self.daemon_memory = executor_memory, daemon_memory
        self.token = uuid.uuid4().hex[:16]
        self.master_port, self.master_ui = free_port(), free_port()
        self.master_url = f"spark://{HOST}:{self.master_port}"
        self.checkpoint_dir = os.path.join(self.workdir, "checkpoints")
        self.code_zip = os.path.join(self.workdir, "lmrefinery_code.zip")
        self.daemons: list[subprocess.Popen] = []
        self.worker_dirs: list[str] = []
        self.submissions: list[Submission] = []
        self._logs: list = []

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def _env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYSPARK_GATEWAY", "SPARK_", "PYSPARK_"))}
        env.update(SPARK_HOME=spark_home(), SPARK_LOCAL_IP=HOST, SPARK_CONF_DIR=os.path.join(self.workdir, "conf"),
                   SPARK_DAEMON_MEMORY=self.daemon_memory, PYSPARK_PYTHON=python_exe(),
                   PYSPARK_DRIVER_PYTHON=python_exe(), LMR_CLUSTER_ID=self.token)
        env.update(extra)
        return env

    def _daemon(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = open(os.path.join(self.workdir, "logs", f"{name}.log"), "wb")
        self._logs.append(log)
        proc = subprocess.Popen([os.path.join(spark_home(), "bin", "spark-class")] + args, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.workdir)
        self.daemons.append(proc)
        return proc

    def start(self, timeout: float = 120) -> "StandaloneCluster":
        for d in ("logs", "conf", "checkpoints"):
            os.makedirs(os.path.join(self.workdir, d), exist_ok=True)
        make_code_zip(self.code_zip)
        try:
            self._daemon("master", ["org.apache.spark.deploy.master.Master", "--host", HOST,
                                    "--port", str(self.master_port), "--webui-port", str(self.master_ui)],
                         self._env())
            for i in range(self.n_workers):
                wdir = os.path.join(self.workdir, f"worker-{i}")
                local = os.path.join(self.workdir, f"local-{i}")
                os.makedirs(wdir, exist_ok=True)
                os.makedirs(local, exist_ok=True)
                self.worker_dirs.append(wdir)
                self._daemon(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", "--host", HOST,
                                             "--port", str(free_port()), "--webui-port", str(free_port()),
                                             "--cores", str(self.cores), "--memory", self.memory,
                                             "--work-dir", wdir, self.master_url],
                             self._env(SPARK_LOCAL_DIRS=local, SPARK_WORKER_DIR=wdir))
            deadline = time.time() + timeout
            while True:
                for p in self.daemons:
                    if p.poll() is not None:
                        raise RuntimeError(f"a cluster daemon exited with {p.returncode}; see {self.workdir}/logs")
                state = self.master_state()
                if state and int(state.get("aliveworkers", 0)) >= self.n_workers:
                    return self
                if time.time() > deadline:
                    raise RuntimeError(f"{self.n_workers} workers did not register with {self.master_url} "
                                       f"in {timeout:.0f}s; see {self.workdir}/logs")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def master_state(self) -> dict | None:
        try:
            return get_json(f"http://{HOST}:{self.master_ui}/json/")
        except Exception:
            return None

    def stop(self, grace: float = 15) -> list[int]:
        """Stop drivers, workers (with their executors) and the master; return pids that had to be SIGKILLed
        after the grace period. Raises if any marked process survives."""
        for s in self.submissions:
            if s.proc.poll() is None:
                s.kill()
        for p in reversed(self.daemons):  # workers first, then the master
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        for p in self.daemons:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        # executors and Python workers that outlived their worker; anything else still carrying the token
        killed = []
        while time.time() < deadline + 10:
            left = marked_pids(self.token)
            if not left:
                break
            if time.time() >= deadline:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.3)
        for p in self.daemons:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for f in self._logs:
            f.close()
        self._logs = []
        left = marked_pids(self.token)
        if left:
            raise RuntimeError(f"processes survived the cluster stop: {left}")
        return sorted(set(killed))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def cleanup(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- jobs ---------------------------------------------------------------------------------------------------
    def submit_argv(self, job: str, job_args: list[str], conf: dict | None = None,
                    ui_port: int | None = None) -> list[str]:
        job_path = job if os.path.isabs(job) else os.path.join(REPO, job)
        confs = {
            "spark.driver.host": HOST, "spark.driver.bindAddress": HOST,
            "spark.executor.cores": str(self.cores), "spark.cores.max": str(self.cores * self.n_workers),
            # reliable checkpoints (jobs.components / dedup cut lineage with them): localCheckpoint blocks live in
            # executors and die with them; a checkpoint dir on storage every node sees survives an executor loss
            "spark.checkpoint.dir": self.checkpoint_dir,
            "spark.ui.showConsoleProgress": "false",
            "spark.ui.enabled": "true" if ui_port else "false",
            **({"spark.ui.port": str(ui_port)} if ui_port else {}),
            **(conf or {}),
        }
        confs = {k: v for k, v in confs.items() if v is not None}   # conf={key: None} drops a default
        argv = [spark_submit_exe(), "--master", self.master_url, "--deploy-mode", "client",
                "--py-files", self.code_zip,
                "--driver-memory", "1g", "--executor-memory", self.executor_memory]
        for k, v in confs.items():
            argv += ["--conf", f"{k}={v}"]
        return argv + [job_path] + list(job_args)

    def submit(self, job: str, job_args: list[str], conf: dict | None = None, env: dict | None = None,
               ui: bool = False) -> Submission:
        """Start spark-submit (client mode) in the background; `.wait()` for it."""
        ui_port = free_port() if ui else None
        argv = self.submit_argv(job, job_args, conf, ui_port)
        log_path = os.path.join(self.workdir, "logs", f"submit-{len(self.submissions):02d}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, env=self._env(**(env or {})), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
        sub = Submission(proc, log_path, ui_port, argv)
        self.submissions.append(sub)
        return sub

    def executor_pids(self) -> dict[str, int]:
        """{executor id: pid} of the live executor JVMs of this cluster."""
        out = {}
        for pid in marked_pids(self.token):
            args = cmdline(pid)
            if any("CoarseGrainedExecutorBackend" in a for a in args) and "--executor-id" in args:
                out[args[args.index("--executor-id") + 1]] = pid
        return out

    def executors_launched(self, app_id: str) -> list[str]:
        """Executor ids launched for an application (their folders under the workers' work dirs)."""
        out = []
        for wdir in self.worker_dirs:
            d = os.path.join(wdir, app_id)
            if os.path.isdir(d):
                out += sorted(os.listdir(d))
        return sorted(out, key=lambda x: int(x) if x.isdigit() else x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("submit", "up"):
        sp = sub.add_parser(name)
        sp.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
        sp.add_argument("--cores", type=int, default=1, help="cores per worker (default 1)")
        sp.add_argument("--memory", default="1g", help="memory per worker (default 1g)")
        sp.add_argument("--workdir", default=None, help="cluster folder: logs, worker dirs (default a temp dir)")
    sp = sub.choices["submit"]
    sp.add_argument("--lake", required=True, help="lake root (every worker must see this path)")
    sp.add_argument("--job", default="jobs/dedup.py", help="job script (default jobs/dedup.py)")
    sp.add_argument("job_args", nargs="*", help="extra job arguments (after --)")
    args = p.parse_args(argv)
    if args.workers < 1 or args.cores < 1:
        print("cluster: error: --workers and --cores must be >= 1", file=sys.stderr)
        return 2
    if args.cmd == "submit" and not os.path.isdir(args.lake):
        print(f"cluster: error: lake folder not found: {args.lake}", file=sys.stderr)
        return 2
    c = StandaloneCluster(args.workdir, workers=args.workers, cores=args.cores, memory=args.memory)
    t0 = time.time()
    c.start()
    print(f"cluster: {c.master_url} up with {args.workers} workers in {time.time() - t0:.1f}s "
          f"(master UI http://{HOST}:{c.master_ui}, logs {c.workdir}/logs)", flush=True)
    try:
        if args.cmd == "up":
            print("cluster: submit with:\n  " + " ".join(c.submit_argv("jobs/dedup.py", ["--lake", "LAKE"])) +
                  "\n  (environment: PYSPARK_PYTHON=" + python_exe() + ")\ncluster: Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
        s = c.submit(args.job, ["--lake", os.path.abspath(args.lake)] + args.job_args)
        rc = s.wait()
        print("".join(line + "\n" for line in s.log().splitlines() if "[lmrefinery" in line), end="")
        print(f"cluster: {args.job} exited {rc} after {s.wall_s}s (driver log {s.log_path})", flush=True)
        return rc
    except KeyboardInterrupt:
        return 130
    finally:
        killed = c.stop()
        print("cluster: stopped; no process left" + (f" (SIGKILLed {len(killed)})" if killed else ""), flush=True)
        if args.workdir is None and args.cmd == "up":
            c.cleanup()


if __name__ == "__main__":
    sys.exit(main())
