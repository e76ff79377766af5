"""Load and check a configuration: defaults, then a YAML file, then `KEY VALUE` overrides.

`load_config` rejects what yacs would accept silently or reject cryptically:

* an unknown key (a typo such as `SOLVER.MAX_ITR`, in the file or in the overrides) raises a
  `ConfigError` naming it and suggesting the closest valid dotted key(s);
* a value of the wrong type names the key, the expected type and the value given
  (`SOLVER.MAX_ITER expects int (default 90000), got str 'abc'`). An int is accepted where a
  float is expected; lists and tuples are interchangeable; tuple elements are checked against
  the default's element type when the default is a non-empty homogeneous tuple;
* a file may start from another with `_BASE_: relative/path.yaml` (resolved against the file's
  folder, applied first, recursively; cycles are an error);
* `validate_config` checks combinations of keys (below) and raises one `ConfigError` listing
  every problem found.

Checks that already live where the config is consumed are not repeated here (one place per
rule): `build_resnet_backbone` (STAGE_WITH_DCN has 4 flags -- every supported CONV_BODY,
R-18/34/50/101-C5, has exactly the four stages res2..res5, so that check is also the "DCN asked
for a stage the depth lacks" check --, NORM, GN groups dividing the backbone widths, CONV_BODY,
RES5_DILATION, FREEZE_CONV_BODY_AT), `build_detection_model` (MASK_ON / MIMIC_ON need the box
head), `build_pooler` (POOLER names), the RPN / box / mask / mimic builders (their sizes). They
raise `ValueError` naming the key when the model is built. `load_config_or_exit(check=...)` runs
a reader's checks at load time and turns their ValueError into a `ConfigError`; the tools pass
`detection.modeling.check_model_config`, which builds the model on the meta device (no memory,
no compiled ops needed for plain configs). The config package imports no reader of the config.

`SOLVER.STEPS` beyond `SOLVER.MAX_ITER` is a warning (`ConfigWarning`), not an error: short runs
(smoke tests, `tools/demo.py`) lower MAX_ITER and keep the schedule; the scheduler accepts it.
STEPS not strictly increasing, or not positive, is an error.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any, Callable, Iterable, Sequence

from yacs.config import CfgNode
import yaml

from detection.config.defaults import _C
from detection.config.validate import (
    ConfigError,
    ConfigWarning,
    config_problems,
    validate_config,
    world_size_from_env,
)

BASE_KEY = "_BASE_"
EXIT_CONFIG_ERROR = 2


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A config file (or a `_BASE_` it names) that does not exist: a ConfigError for the
    loader's callers, and a FileNotFoundError for code that catches those."""


__all__ = [  # the checks live in validate.py; loading goes through them
    "ConfigError",
    "ConfigFileNotFoundError",
    "ConfigWarning",
    "config_problems",
    "load_checked_config",
    "load_config",
    "load_config_or_exit",
    "merge_file",
    "merge_opts",
    "validate_config",
]


# ---------------------------------------------------------------------------------------------
# keys and types


def flat_keys(node: CfgNode, prefix: str = "") -> dict[str, Any]:
    """Every leaf of `node` as {"A.B.C": value}."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, CfgNode):
            out.update(flat_keys(v, full + "."))
        else:
            out[full] = v
    return out


def _sections(node: CfgNode, prefix: str = "") -> set[str]:
    out = set()
    for k, v in node.items():
        if isinstance(v, CfgNode):
            out.add(prefix + k)
            out |= _sections(v, f"{prefix}{k}.")
    return out


def suggest_keys(key: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """Valid dotted keys closest to `key`: same last component first, then difflib's closest."""
    valid = sorted(valid)
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [v for v in valid if v.rsplit(".", 1)[-1] == leaf]
    close = difflib.get_close_matches(key, valid, n=n, cutoff=0.6)
    out = []
    for v in same_leaf + close:
        if v not in out:
            out.append(v)
    return out[:n]


def _unknown_key_error(key: str, where: str, valid: Iterable[str]) -> ConfigError:
    hint = suggest_keys(key, valid)
    msg = f"unknown config key {key} ({where})"
    if hint:
        msg += "; did you mean " + " or ".join(hint) + "?"
    return ConfigError(msg)


def _type_name(t: type) -> str:
    return {type(None): "None"}.get(t, t.__name__)


def _describe(value: Any) -> str:
    return "None" if value is None else f"{_type_name(type(value))} {value!r}"


def _element_type(default: tuple) -> type | None:
    types = {type(x) for x in default}
    if len(default) == 0 or len(types) != 1:
        return None
    (t,) = types
    return t if t in (int, float, bool, str) else None


def _coerce_scalar(value: Any, expected: type) -> tuple[bool, Any]:
    if type(value) is expected:
        return True, value
    if expected is float and type(value) is int:
        return True, float(value)
    return False, None


def coerce_value(key: str, value: Any, default: Any, where: str) -> Any:
    """`value` converted to the type of `default`, or a ConfigError naming `key`."""
    if default is None:
        return value
    expected = type(default)
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(
                f"{key} expects a {expected.__name__} (default {default!r}), got "
                f"{_describe(value)} ({where})"
            )
        elem = _element_type(tuple(default))
        if elem is not None:
            items = []
            for i, x in enumerate(value):
                ok, x = _coerce_scalar(x, elem)
                if not ok:
                    raise ConfigError(
                        f"{key}[{i}] expects {elem.__name__} (default {default!r}), got "
                        f"{_describe(value[i])} ({where})"
                    )
                items.append(x)
            value = items
        return expected(value)
    ok, out = _coerce_scalar(value, expected)
    if not ok:
        raise ConfigError(
            f"{key} expects {expected.__name__} (default {default!r}), got {_describe(value)} "
            f"({where})"
        )
    return out


# ---------------------------------------------------------------------------------------------
# merging


def _flatten_mapping(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten_mapping(v, full + ".")
        else:
            out.append((full, v))
    return out


def _set(cfg: CfgNode, key: str, value: Any) -> None:
    node = cfg
    *path, leaf = key.split(".")
    for p in path:
        node = node[p]
    node[leaf] = value


def _merge_pairs(cfg: CfgNode, pairs: Sequence[tuple[str, Any]], where: str) -> None:
    """Check every (dotted key, raw value) against the defaults in `cfg`, then set it."""
    leaves = flat_keys(cfg)
    sections = _sections(cfg)
    for key, raw in pairs:
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r} ({where})")
        if key in sections:
            raise ConfigError(
                f"{key} is a section, not a value: give its keys (e.g. "
                f"{sorted(k for k in leaves if k.startswith(key + '.'))[0]}), got "
                f"{_describe(raw)} ({where})"
            )
        if key not in leaves:
            parts = key.split(".")
            for i in range(1, len(parts)):
                head = ".".join(parts[:i])
                if head in leaves:
                    raise ConfigError(
                        f"{head} expects {_type_name(type(leaves[head]))} (default "
                        f"{leaves[head]!r}), got a sub-key {'.'.join(parts[i:])} "
                        f"({where})"
                    )
            raise _unknown_key_error(key, where, leaves)
        value = CfgNode._decode_cfg_value(raw) if not isinstance(raw, dict) else raw
        if isinstance(value, dict):
            raise ConfigError(
                f"{key} expects {_type_name(type(leaves[key]))} (default {leaves[key]!r}), got "
                f"an empty mapping ({where})"
            )
        _set(cfg, key, coerce_value(key, value, leaves[key], where))


def _read_yaml(path: str, chain: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """(key, value) pairs of `path`, its `_BASE_` files' pairs first."""
    path = os.path.abspath(path)
    if path in chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*chain, path))
        raise ConfigError(f"{BASE_KEY} cycle: {cycle}")
    if not os.path.isfile(path):
        raise ConfigFileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {_describe(data)}")
    pairs: list[tuple[str, Any]] = []
    base = data.pop(BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{BASE_KEY} in {path} must be a path string, got {_describe(base)}")
        base_path = os.path.join(os.path.dirname(path), base)
        pairs += _read_yaml(base_path, (*chain, path))
    where = f"in {path}"
    pairs += [(k, (v, where)) for k, v in _flatten_mapping(data)]
    return pairs


def merge_file(cfg: CfgNode, config_file: str) -> None:
    """Merge a YAML file (and its `_BASE_` chain) into the unfrozen `cfg`, checking every key."""
    for key, (value, where) in _read_yaml(config_file):
        _merge_pairs(cfg, [(key, value)], where)


def merge_opts(cfg: CfgNode, opts: Sequence[Any]) -> None:
    """Merge a flat `[KEY, VALUE, KEY, VALUE, ...]` list into the unfrozen `cfg`."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"config overrides must be KEY VALUE pairs, got an odd number ({len(opts)}): "
            f"{' '.join(map(str, opts))}: add the missing value"
        )
    pairs = list(zip(opts[0::2], opts[1::2]))
    _merge_pairs(cfg, pairs, "in the command-line overrides")


# ---------------------------------------------------------------------------------------------
# entry points


def load_config(
    config_file: str | None,
    opts: Sequence[Any] | None = None,
    base: CfgNode = _C,
    *,
    world_size: int | None = None,
) -> CfgNode:
    """A frozen clone of `base` merged with `config_file` (YAML, `_BASE_` allowed) and `opts`
    (`[KEY, VALUE, ...]`), checked by `validate_config`. `world_size` None reads the
    `WORLD_SIZE` environment variable (torchrun sets it; 1 without it).

    Raises ConfigError (a ValueError) naming the offending key.
    """
    cfg = base.clone()
    cfg.defrost()
    if config_file:
        merge_file(cfg, config_file)
    if opts:
        merge_opts(cfg, opts)
    validate_config(cfg, world_size_from_env() if world_size is None else world_size)
    cfg.freeze()
    return cfg


def load_checked_config(
    config_file: str | None,
    opts: Sequence[Any] | None = None,
    base: CfgNode = _C,
    *,
    world_size: int | None = None,
    check: Callable[[CfgNode], None] | None = None,
) -> CfgNode:
    """`load_config`, then `check(cfg)`, a reader's own checks (the tools pass
    `detection.modeling.check_model_config`); its ValueError becomes a ConfigError too."""
    cfg = load_config(config_file, opts, base, world_size=world_size)
    if check is not None:
        try:
            check(cfg)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"invalid config: {e}") from None
    return cfg


def load_config_or_exit(
    config_file: str | None,
    opts: Sequence[Any] | None = None,
    base: CfgNode = _C,
    *,
    world_size: int | None = None,
    check: Callable[[CfgNode], None] | None = None,
) -> CfgNode:
    """`load_checked_config` for scripts without `detection.utils.cli.cli_main`: on a
    ConfigError print `error: <message>` to stderr (no traceback) and exit with status 2."""
    try:
        return load_checked_config(config_file, opts, base, world_size=world_size, check=check)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
