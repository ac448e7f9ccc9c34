"""Pipeline configuration: conf/pipeline.yaml plus `--set a.b.c=value` overrides, checked strictly, and its hash.

conf/pipeline.yaml is the declaration of every stage parameter: its default, its kind (from the default, or from
NULL_DEFAULT_TYPES for keys that default to null) and a one-line comment. A config file given with --conf and every
--set are checked against it: an unknown key or a value of the wrong kind is refused with one line naming the key
and the nearest known key (exit 2).
"""
from __future__ import annotations

import os

from udfs.common import REPO_ROOT, ConfigError, apply_overrides, check_config, config_hash, load_yaml

__all__ = ["ConfigError", "apply_overrides", "config_hash", "load_config", "load_yaml", "pipeline_schema"]

DEFAULT_PIPELINE_CONF = os.path.join(REPO_ROOT, "conf", "pipeline.yaml")

# keys whose default is null: the kinds a value may have
NULL_DEFAULT_TYPES = {
    "ingest.max_line_bytes": (int,),
    "filter.langid.model_path": (str,),
    "filter.classifier.model_path": (str,),
    "filter.url.blocklist": (str,),
    "dedup.bands": (int,),
    "dedup.rows": (int,),
    "dedup.quality_column": (str,),
    "mix.weights": (dict, str),
    "mix.token_budget": (int, float, str),
    "mix.tokenizer": (str,),
    "synthesize.generator": (str,),
    "synthesize.model_name": (str,),
    "self_instruct.generator": (str,),
    "self_instruct.model_name": (str,),
    "self_instruct.corpus_table": (str,),
    "pipeline.stages": (list, str),
}
# mappings whose children are named by the user (domains); the stage checks what is below them
FREE_FORM = ("filter.domains", "filter.quality", "filter.by_language", "mix.weights")

_schema_cache: dict = {}


def pipeline_schema() -> dict:
    if "schema" not in _schema_cache:
        _schema_cache["schema"] = load_yaml(DEFAULT_PIPELINE_CONF)
    return _schema_cache["schema"]


def load_config(path: str | None = None, overrides: list[str] | None = None) -> dict:
    """The config file (default conf/pipeline.yaml) with `--set` overrides, checked against the declaration."""
    conf = load_yaml(path or DEFAULT_PIPELINE_CONF)
    schema = pipeline_schema()
    if path:
        try:
            check_config(conf, schema, FREE_FORM, NULL_DEFAULT_TYPES)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    conf = apply_overrides(conf, overrides)
    try:
        check_config(conf, schema, FREE_FORM, NULL_DEFAULT_TYPES)
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None
    return conf
