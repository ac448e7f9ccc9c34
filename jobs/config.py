"""Pipeline configuration: conf/pipeline.yaml plus `--set a.b.c=value` overrides, and its stable hash."""
from __future__ import annotations

import copy
import hashlib
import json
import os

import yaml

from jobs.session import REPO_ROOT

DEFAULT_PIPELINE_CONF = os.path.join(REPO_ROOT, "conf", "pipeline.yaml")


class ConfigError(ValueError):
    pass


def load_yaml(path: str) -> dict:
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
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
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str) and "," in value:
            value = [yaml.safe_load(v) for v in value.split(",")]
        node = conf
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return conf


def load_config(path: str | None = None, overrides: list[str] | None = None) -> dict:
    return apply_overrides(load_yaml(path or DEFAULT_PIPELINE_CONF), overrides)


def config_hash(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
