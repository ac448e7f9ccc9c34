"""Run untrusted candidate code against tests in a subprocess, with limits (pure Python, no Spark).

`run_python(code, tests)` starts `python -I` in a fresh temporary folder with:
* a wall-clock limit (`timeout_s`; the whole process group is killed) and a CPU-time limit (RLIMIT_CPU);
* an address-space limit (`memory_mb`, RLIMIT_AS) and a file-size limit (RLIMIT_FSIZE);
* an audit hook (PEP 578) installed before the candidate runs, which ends the process at once (os._exit, so the
  candidate cannot catch it) on: creating a socket or resolving a name (no network), fork / exec / spawn /
  subprocess / os.system or importing `_posixsubprocess` (whose fork_exec raises no event) (no new processes),
  opening a file for writing or removing, renaming or creating a
  path outside the temporary folder, loading native code (ctypes), and changing the audit hooks' view
  (sys.settrace/monitoring are allowed: harmless).
The verdict is one of `passed`, `failed` (an assertion or any exception in the tests), `timeout`, `memory`,
`refused:<what>` (network, process, write, native) or `error` (the runner itself could not start).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REFUSED_EXIT = 97
MARKER = "LMR-SANDBOX-REFUSED "

# Runs in the child: read the job, install the hook, run code then tests. Exit 0 = tests passed.
_RUNNER = r"""
import json, os, sys
job = json.loads(sys.stdin.read())
ROOT = os.path.realpath(job["root"])
NET = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
       "socket.sendto", "socket.sendmsg")
PROC = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "subprocess.Popen",
        "os.kill", "os.killpg", "pty.spawn")
PATHS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
         "os.chown", "shutil.rmtree", "shutil.move", "os.utime")
NATIVE = ("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function")

def inside(p):
    try:
        p = os.fsdecode(p) if not isinstance(p, int) else None
    except Exception:
        return False
    if p is None:
        return True  # a file descriptor already open
    full = os.path.realpath(os.path.join(ROOT, p))
    return full == ROOT or full.startswith(ROOT + os.sep)

def refuse(what, detail):
    os.write(2, ("\nLMR-SANDBOX-REFUSED " + what + " " + detail[:200] + "\n").encode("utf-8", "replace"))
    os._exit(97)

def hook(event, args):
    if event == "import" and args[0] in ("_posixsubprocess", "_xxsubinterpreters", "_interpreters"):
        refuse("process", "import " + args[0])  # fork_exec raises no audit event of its own
    if event in NET:
        refuse("network", event)
    if event in PROC or event.startswith("os.exec") or event.startswith("os.spawn"):
        refuse("process", event)
    if event in NATIVE:
        refuse("native", event)
    if event == "open":
        path, mode = args[0], args[1]
        writing = isinstance(mode, str) and any(c in mode for c in "wax+")
        if isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            writing = True
        if writing and not inside(path):
            refuse("write", str(path))
    elif event in PATHS:
        for p in args[:2]:
            if isinstance(p, (str, bytes, os.PathLike)) and not inside(p):
                refuse("write", event + " " + str(p))

code, tests = job["code"], job["tests"]
sys.addaudithook(hook)
g = {"__name__": "__candidate__"}
try:
    exec(compile(code, "<candidate>", "exec"), g)
    exec(compile(tests, "<tests>", "exec"), g)
except MemoryError:
    os.write(2, b"\nMemoryError\n")
    os._exit(3)
except BaseException as e:
    os.write(2, ("\n" + type(e).__name__ + ": " + str(e)[:300] + "\n").encode("utf-8", "replace"))
    os._exit(1)
os._exit(0)
"""


def _limit(pid: int, memory_mb: int, cpu_s: int, fsize_mb: int) -> None:
    """Set the child's limits from outside (prlimit) while it still waits for its job on stdin: no preexec_fn,
    which is unsafe in a multithreaded parent such as a Spark Python worker."""
    import resource

    resource.prlimit(pid, resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.prlimit(pid, resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (fsize_mb << 20, fsize_mb << 20))
    resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))


def run_python(code: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 512, fsize_mb: int = 1) -> dict:
    """{"verdict", "detail", "seconds"} of running `code` then `tests` in the sandbox."""
    root = tempfile.mkdtemp(prefix="lmr-sandbox-")
    t0 = time.perf_counter()
    try:
        env = {"PATH": "", "HOME": root, "TMPDIR": root, "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        try:
            # its own session and process group: a timeout kills everything it started
            p = subprocess.Popen([sys.executable, "-I", "-S", "-c", _RUNNER], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root, env=env,
                                 start_new_session=True)
        except OSError as e:
            return {"verdict": "error", "detail": f"cannot start the sandbox: {e}", "seconds": 0.0}
        try:
            _limit(p.pid, memory_mb, max(1, int(timeout_s + 0.999)), fsize_mb)
        except OSError as e:  # never run a candidate without its limits
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return {"verdict": "error", "detail": f"cannot limit the sandbox: {e}", "seconds": 0.0}
        try:
            _, err = p.communicate(json.dumps({"root": root, "code": code, "tests": tests}).encode(),
                                   timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.communicate()
            return {"verdict": "timeout", "detail": f"killed after {timeout_s:g} s",
                    "seconds": time.perf_counter() - t0}
        err = err.decode("utf-8", "replace")
        secs = time.perf_counter() - t0
        rc = p.returncode
        if rc == REFUSED_EXIT and MARKER in err:
            what, _, detail = err.split(MARKER, 1)[1].strip().partition(" ")
            return {"verdict": f"refused:{what}", "detail": detail, "seconds": secs}
        if rc == 0:
            return {"verdict": "passed", "detail": "", "seconds": secs}
        if rc == 3 or "MemoryError" in err:
            return {"verdict": "memory", "detail": f"over {memory_mb} MB", "seconds": secs}
        if rc in (-signal.SIGXCPU, -signal.SIGKILL):
            return {"verdict": "timeout", "detail": f"CPU limit ({rc})", "seconds": secs}
        if rc == -signal.SIGXFSZ or "File too large" in err:
            return {"verdict": "refused:write", "detail": f"file over {fsize_mb} MB", "seconds": secs}
        if rc < 0:
            return {"verdict": "failed", "detail": f"killed by signal {-rc}", "seconds": secs}
        lines = [x for x in err.strip().splitlines() if x.strip()]
        return {"verdict": "failed", "detail": lines[-1][:300] if lines else f"exit code {rc}", "seconds": secs}
    finally:
        shutil.rmtree(root, ignore_errors=True)
