"""Leaf helpers shared by jobs/ and model/: user errors and their one-line report, YAML config loading with
`--set` overrides, strict checking of a config against its declared defaults, and the stable config hash.

Imports nothing from jobs/ or model/ (tests/test_imports.py checks), so the trainer can use it without Spark.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import sys
import traceback

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UserError(Exception):
    """An error caused by the input, the arguments or the lake; printed as one line, no traceback."""


class ConfigError(UserError, ValueError):
    """A bad configuration file or key."""


def debug_enabled() -> bool:
    return os.environ.get("LMR_DEBUG", "") not in ("", "0", "false")


def run_main(prog: str, main, argv=None) -> int:
    """Call `main(argv)`: exit 0 on success; a user error is one line `<prog>: error: <cause>` and exit 2
    (`--debug` or LMR_DEBUG=1 also prints the traceback); an internal failure keeps its traceback, exit 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ["LMR_DEBUG"] = "1"
    try:
        rc = main(argv)
        return 0 if rc is None else int(rc)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        if debug_enabled():
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal failure: keep the traceback, but end with a one-line cause
        traceback.print_exc()
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{prog}: failed: {e.__class__.__name__}: {line}", file=sys.stderr)
        return 1


def exit_process(rc: int) -> None:
    """End a command-line run with exit status `rc`. Python's exit handlers run first (leases released, logs
    flushed, the Spark gateway closed); then the process ends without the native libraries' static destructors:
    one of them (a C++ thread pool of a native dependency) intermittently aborted finished runs at that point with
    "terminate called without an active exception", turning a run whose every commit was done into exit 134."""
    import atexit

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    flush()
    atexit._run_exitfuncs()
    flush()  # what the exit handlers printed
    os._exit(rc)


# ---- configuration ----------------------------------------------------------------------------------------------
def load_yaml(path: str) -> dict:
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.isdir(path):
        raise ConfigError(f"config path is a folder, not a YAML file: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse YAML {path}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def apply_overrides(conf: dict, overrides: list[str] | None) -> dict:
    """`["filter.langid.languages=en,de", "dedup.threshold=0.7"]` -> nested update. Values are parsed as YAML;
    a bare comma-separated value becomes a list."""
    conf = copy.deepcopy(conf)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set has an empty key: {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if isinstance(value, str) and "," in value:
                value = [yaml.safe_load(v) for v in value.split(",")]
        except yaml.YAMLError:
            raise ConfigError(f"--set {key.strip()}: cannot parse value {raw!r}") from None
        node = conf
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return conf


def config_hash(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def nearest(name: str, known) -> str:
    """' (did you mean X?)' for the closest known name, or ''."""
    m = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


# bool before int: True is an int too
_KIND_NAMES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"),
               (dict, "a mapping"))


def _type_name(v) -> str:
    return next((name for t, name in _KIND_NAMES if isinstance(v, t)), type(v).__name__)


def _fits(default, value) -> bool:
    """Whether `value` may replace `default` (same kind; ints may stand for floats; null turns a key off)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)  # paths, sizes like 10M
    if isinstance(default, list):
        return isinstance(value, (list, str))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def check_config(conf: dict, schema: dict, free: tuple[str, ...] = (), types: dict | None = None,
                 prefix: str = "") -> None:
    """Refuse keys of `conf` that `schema` (the shipped defaults) does not declare, and values of the wrong kind,
    with one line naming the key and the nearest known one. Below a key whose default is an empty mapping, or
    whose dotted path is in `free` (user-named children such as filter.domains), the stage checks the keys itself.
    `types`: dotted path -> allowed Python types, for keys whose default is null."""
    types = types or {}
    for key, value in conf.items():
        path = f"{prefix}{key}"
        if key not in schema:
            hint = nearest(key, schema)
            if hint:
                hint = hint.replace("'", "'" + prefix, 1)
            raise ConfigError(f"unknown config key {path!r}{hint}")
        default = schema[key]
        allowed = types.get(path)
        if allowed is not None and value is not None:
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                names = " or ".join(_type_name(t()) if t is not bool else "a boolean" for t in allowed)
                raise ConfigError(f"config key {path!r} must be {names}, got {value!r}")
        elif not _fits(default, value):
            raise ConfigError(f"config key {path!r} must be {_type_name(default)}, got {value!r}")
        if isinstance(default, dict) and default and isinstance(value, dict) and path not in free:
            check_config(value, default, free, types, f"{path}.")
