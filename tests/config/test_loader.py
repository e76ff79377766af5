"""detection.config.load_config: unknown keys with suggestions, wrong types, `_BASE_`, invalid
combinations, the CLI helper's exit status, and every shipped config loads and validates (one
test per rule of the loader, hence the length)."""

import glob
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
from yacs.config import CfgNode
import yaml

from detection.config import (
    ConfigError,
    ConfigWarning,
    load_config,
    load_config_or_exit,
    validate_config,
)
from detection.config import (
    cfg as defaults,
)
from detection.config.loader import flat_keys, suggest_keys
from detection.modeling import check_model_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
SHAPES = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes.yaml")


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_shipped_configs_are_found():
    assert len(CONFIGS) >= 6, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path, world_size=1)
    assert cfg.is_frozen()
    check_model_config(cfg)  # the model builders' own checks, on the meta device
    # what the file says is what the cfg holds (a yacs merge of the same file agrees)
    ref = defaults.clone()
    _yacs_merge(ref, path)
    assert flat_keys(cfg) == flat_keys(ref)


def _yacs_merge(ref, path):
    """Plain yacs merges of `path`'s `_BASE_` chain, base first."""
    with open(path) as f:
        data = yaml.safe_load(f)
    base = data.pop("_BASE_", None)
    if base:
        _yacs_merge(ref, os.path.join(os.path.dirname(path), base))
    ref.merge_from_other_cfg(CfgNode(data))


def test_defaults_are_not_modified():
    before = flat_keys(defaults)
    load_config(None, ["SOLVER.MAX_ITER", "95000"], world_size=1)
    assert flat_keys(defaults) == before
    assert not defaults.is_frozen()


# ---------------------------------------------------------------------------------------------
# unknown keys


def test_typo_in_file_names_key_and_suggests(tmp_path):
    path = _write(tmp_path, "typo.yaml", "SOLVER:\n  MAX_ITR: 100\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, world_size=1)
    msg = str(err.value)
    assert "SOLVER.MAX_ITR" in msg and path in msg
    assert "did you mean SOLVER.MAX_ITER" in msg


def test_typo_in_opts_names_key_and_suggests():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["SOLVER.MAX_ITR", "100"], world_size=1)
    msg = str(err.value)
    assert "SOLVER.MAX_ITR" in msg and "command-line" in msg
    assert "did you mean SOLVER.MAX_ITER" in msg


@pytest.mark.parametrize(
    "typo, expected",
    [
        ("MODEL.RESNET.NORM", "MODEL.RESNETS.NORM"),  # a misspelt section
        ("MODEL.NMS_THRESH", "MODEL.RPN.NMS_THRESH"),  # the right leaf in the wrong section
        ("SOLVER.AMP.DTYP", "SOLVER.AMP.DTYPE"),
        ("INPUT.MIN_SIZE_TRIAN", "INPUT.MIN_SIZE_TRAIN"),
    ],
)
def test_suggestions_are_the_closest_valid_keys(typo, expected):
    valid = flat_keys(defaults)
    assert expected in valid
    assert suggest_keys(typo, valid)[0] == expected
    with pytest.raises(
        ConfigError, match=re.escape(typo) + ".*did you mean " + re.escape(expected)
    ):
        load_config(None, [typo, "1"], world_size=1)


def test_unknown_key_is_a_value_error_with_a_clean_message():
    with pytest.raises(ValueError) as err:
        load_config(None, ["NOPE", "1"], world_size=1)
    assert isinstance(err.value, ConfigError)
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


def test_section_given_a_value_and_value_given_a_section(tmp_path):
    with pytest.raises(ConfigError, match=r"SOLVER is a section"):
        load_config(None, ["SOLVER", "1"], world_size=1)
    path = _write(tmp_path, "nested.yaml", "SOLVER:\n  MAX_ITER:\n    VALUE: 3\n")
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER expects int .*sub-key VALUE"):
        load_config(path, world_size=1)


def test_odd_number_of_opts():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["SOLVER.MAX_ITER"], world_size=1)


# ---------------------------------------------------------------------------------------------
# types


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("SOLVER.MAX_ITER", "abc", "int"),
        ("SOLVER.MAX_ITER", "1.5", "int"),
        ("SOLVER.MAX_ITER", "True", "int"),
        ("MODEL.MASK_ON", "1", "bool"),
        ("MODEL.RESNETS.NORM", "3", "str"),
        ("SOLVER.BASE_LR", "fast", "float"),
        ("SOLVER.STEPS", "100", "tuple"),
        ("MODEL.RESNETS.STAGE_WITH_DCN", "(False, 1, True, True)", "bool"),
        ("INPUT.MIN_SIZE_TRAIN", "('800',)", "int"),
        ("SOLVER.MAX_ITER", "None", "int"),
    ],
)
def test_wrong_type_names_key_and_expected_type(key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [key, value], world_size=1)
    msg = str(err.value)
    assert msg.startswith(key), msg
    assert f"expects {expected}" in msg or f"expects a {expected}" in msg, msg


def test_wrong_type_in_file(tmp_path):
    path = _write(tmp_path, "type.yaml", "SOLVER:\n  MAX_ITER: abc\n")
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER expects int .*'abc'"):
        load_config(path, world_size=1)


def test_accepted_coercions():
    cfg = load_config(
        None,
        [
            "SOLVER.BASE_LR", "1",  # int where a float is expected
            "SOLVER.STEPS", "[10, 20]",  # a list where a tuple is expected
            "INPUT.PIXEL_STD", "(1, 2, 3)",  # ints in a float tuple
            "DATASETS.TRAIN", "('a', 'b')",  # an empty default tuple takes any elements
            "MODEL.WEIGHT", "some/path.pth",  # a plain string stays a string
        ],
        world_size=1,
    )  # fmt: skip
    assert cfg.SOLVER.BASE_LR == 1.0 and type(cfg.SOLVER.BASE_LR) is float
    assert cfg.SOLVER.STEPS == (10, 20)
    assert cfg.INPUT.PIXEL_STD == (1.0, 2.0, 3.0)
    assert all(type(x) is float for x in cfg.INPUT.PIXEL_STD)
    assert cfg.DATASETS.TRAIN == ("a", "b")
    assert cfg.MODEL.WEIGHT == "some/path.pth"


def test_opts_override_file(tmp_path):
    path = _write(tmp_path, "a.yaml", "SOLVER:\n  MAX_ITER: 100\n  STEPS: (50,)\n")
    cfg = load_config(path, ["SOLVER.MAX_ITER", "200"], world_size=1)
    assert cfg.SOLVER.MAX_ITER == 200 and cfg.SOLVER.STEPS == (50,)


# ---------------------------------------------------------------------------------------------
# _BASE_


def test_base_inheritance_is_relative_and_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "root.yaml", "SOLVER:\n  MAX_ITER: 100\n  BASE_LR: 0.5\n  STEPS: (50,)\n")
    _write(tmp_path, "sub/mid.yaml", "_BASE_: ../root.yaml\nSOLVER:\n  BASE_LR: 0.25\n")
    leaf = _write(tmp_path, "sub/leaf.yaml", "_BASE_: mid.yaml\nSOLVER:\n  MAX_ITER: 300\n")
    cfg = load_config(leaf, world_size=1)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SOLVER.STEPS) == (300, 0.25, (50,))


def test_base_on_a_shipped_config(tmp_path):
    path = _write(tmp_path, "short.yaml", f"_BASE_: {SHAPES}\nSOLVER:\n  MAX_ITER: 10\n")
    cfg = load_config(path, ["SOLVER.STEPS", "(5,)"], world_size=1)
    assert cfg.MODEL.BACKBONE.CONV_BODY == "R-18-C5" and cfg.SOLVER.MAX_ITER == 10


def test_base_errors(tmp_path):
    a = _write(tmp_path, "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path, "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_ cycle"):
        load_config(a, world_size=1)
    c = _write(tmp_path, "c.yaml", "_BASE_: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found.*missing.yaml"):
        load_config(c, world_size=1)
    d = _write(tmp_path, "d.yaml", "_BASE_: a.yaml\nSOLVER:\n  MAX_ITR: 1\n")
    _write(tmp_path, "a.yaml", "SOLVER:\n  MAX_ITER: 100\n")
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITR .*d\.yaml"):
        load_config(d, world_size=1)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"), world_size=1)
    bad = _write(tmp_path, "bad.yaml", "SOLVER: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, world_size=1)
    scalar = _write(tmp_path, "scalar.yaml", "42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar, world_size=1)
    empty = _write(tmp_path, "empty.yaml", "")
    assert load_config(empty, world_size=1).SOLVER.MAX_ITER == defaults.SOLVER.MAX_ITER


# ---------------------------------------------------------------------------------------------
# invalid combinations checked at config level


@pytest.mark.parametrize(
    "opts, keys",
    [
        (
            ["MODEL.ROI_HEADS.OHEM", "True", "MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE", "600"],
            ["MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"],
        ),
        (["SOLVER.AMP.DTYPE", "float8"], ["SOLVER.AMP.DTYPE"]),
        (["SOLVER.AMP.DTYPE", "half"], ["SOLVER.AMP.DTYPE"]),
        (["SOLVER.STEPS", "(80000, 60000)"], ["SOLVER.STEPS"]),
        (["SOLVER.STEPS", "(60000, 60000)"], ["SOLVER.STEPS"]),
        (["SOLVER.STEPS", "(0, 60000)"], ["SOLVER.STEPS"]),
        (["SOLVER.MAX_ITER", "0"], ["SOLVER.MAX_ITER"]),
        (["SOLVER.OPTIMIZER", "Adam"], ["SOLVER.OPTIMIZER"]),
        (["SOLVER.BETAS", "(0.9,)"], ["SOLVER.BETAS"]),
        (["SOLVER.BETAS", "(0.9, 1.0)"], ["SOLVER.BETAS"]),
        (["SOLVER.LR_SCHEDULER_NAME", "cosine"], ["SOLVER.LR_SCHEDULER_NAME"]),
        (["SOLVER.BASE_LR_END", "0.5"], ["SOLVER.BASE_LR_END", "SOLVER.BASE_LR"]),
        (["SOLVER.BASE_LR_END", "-0.1"], ["SOLVER.BASE_LR_END"]),
        (["INPUT.BATCH_SCALES_TRAIN", "(0.5, 0.0)"], ["INPUT.BATCH_SCALES_TRAIN"]),
        (["INPUT.BATCH_SCALES_TRAIN", "('a',)"], ["INPUT.BATCH_SCALES_TRAIN"]),
        (["INPUT.BATCH_SCALES_TRAIN", "(True,)"], ["INPUT.BATCH_SCALES_TRAIN"]),
        (["INPUT.BATCH_SCALES_UNTIL", "0.0"], ["INPUT.BATCH_SCALES_UNTIL"]),
        (["INPUT.BATCH_SCALES_UNTIL", "1.5"], ["INPUT.BATCH_SCALES_UNTIL"]),
    ],
)
def test_invalid_combination_names_the_keys(opts, keys):
    with pytest.raises(ConfigError) as err:
        load_config(None, opts, world_size=1)
    for key in keys:
        assert key in str(err.value), str(err.value)


def test_ohem_batch_is_only_checked_with_ohem():
    cfg = load_config(
        None,
        ["MODEL.ROI_HEADS.OHEM", "False", "MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE", "600"],
        world_size=1,
    )
    assert cfg.MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE == 600
    load_config(None, ["MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE", "512"], world_size=1)


def test_all_problems_are_listed_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["SOLVER.AMP.DTYPE", "fp8", "SOLVER.STEPS", "(2, 1)"], world_size=1)
    assert "SOLVER.AMP.DTYPE" in str(err.value) and "SOLVER.STEPS" in str(err.value)


@pytest.mark.parametrize(
    "world_size, ok", [(1, True), (2, True), (4, True), (3, False), (32, False)]
)
def test_ims_per_batch_divisible_by_world_size(world_size, ok):
    # SOLVER.IMS_PER_BATCH 16, TEST.IMS_PER_BATCH 8
    cfg = load_config(None, world_size=1)
    if ok:
        validate_config(cfg, world_size)
        load_config(None, world_size=world_size)
        return
    with pytest.raises(
        ConfigError, match=r"SOLVER\.IMS_PER_BATCH \(16\).*world size \(%d" % world_size
    ):
        validate_config(cfg, world_size)


def test_test_batch_divisible_by_world_size():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TEST.IMS_PER_BATCH", "6"], world_size=4)
    assert "TEST.IMS_PER_BATCH (6)" in str(err.value)
    assert "SOLVER.IMS_PER_BATCH" not in str(err.value)


def test_world_size_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="world size"):
        load_config(None)
    monkeypatch.setenv("WORLD_SIZE", "4")
    load_config(None)


def test_steps_beyond_max_iter_warn_not_fail():
    with pytest.warns(ConfigWarning, match=r"SOLVER\.STEPS \(80000,\).*SOLVER\.MAX_ITER \(70000\)"):
        cfg = load_config(None, ["SOLVER.MAX_ITER", "70000"], world_size=1)
    assert cfg.SOLVER.MAX_ITER == 70000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, world_size=1)  # (60000, 80000) < 90000: no warning
        # the cosine schedule reads no STEPS, so STEPS beyond MAX_ITER say nothing
        load_config(
            None,
            ["SOLVER.MAX_ITER", "70000", "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR"],
            world_size=1,
        )


# ---------------------------------------------------------------------------------------------
# combinations the model builders check: surfaced as ConfigError before training starts


@pytest.mark.parametrize(
    "opts, key",
    [
        (["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True)"], "MODEL.RESNETS.STAGE_WITH_DCN"),
        (
            ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True, True)"],
            "MODEL.RESNETS.STAGE_WITH_DCN",
        ),
        (["MODEL.RESNETS.NORM", "LN"], "MODEL.RESNETS.NORM"),
        (["MODEL.GROUP_NORM.NUM_GROUPS", "48"], "MODEL.GROUP_NORM.NUM_GROUPS"),
        (["MODEL.RESNETS.DEFORMABLE_GROUPS", "5"], "MODEL.RESNETS.DEFORMABLE_GROUPS"),
        (["MODEL.ROI_BOX_HEAD.POOLER", "PSRoIPool"], "MODEL.ROI_BOX_HEAD.POOLER"),
        (["MODEL.ROI_MASK_HEAD.POOLER", "RoIPool"], "MODEL.ROI_MASK_HEAD.POOLER"),
        (
            ["MODEL.RPN_ONLY", "True", "MODEL.MASK_ON", "False", "MODEL.MIMIC_ON", "True"],
            "MODEL.MIMIC_ON",
        ),
    ],
)
def test_model_checks_become_config_errors(opts, key, capsys):
    cfg = load_config(SHAPES, opts, world_size=1)  # config-level checks pass
    with pytest.raises(ValueError, match=re.escape(key)):
        check_model_config(cfg)  # the builders' own checks, naming the key
    with pytest.raises(SystemExit) as exc:  # what the tools see: one error line, status 2
        load_config_or_exit(SHAPES, opts, world_size=1, check=check_model_config)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config: ") and key in err


# ---------------------------------------------------------------------------------------------
# the command-line helper


def test_load_config_or_exit_returns_the_cfg():
    cfg = load_config_or_exit(
        SHAPES, ["SOLVER.STEPS", "(5,)", "SOLVER.MAX_ITER", "10"], world_size=1
    )
    assert cfg.SOLVER.MAX_ITER == 10 and cfg.is_frozen()


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["SOLVER.MAX_ITR", "5"], "did you mean SOLVER.MAX_ITER"),
        (["SOLVER.MAX_ITER", "abc"], "SOLVER.MAX_ITER expects int"),
        (["MODEL.RESNETS.NORM", "LN"], "MODEL.RESNETS.NORM"),  # a model-builder check
    ],
)
def test_load_config_or_exit_prints_and_exits_2(capsys, opts, expected):
    with pytest.raises(SystemExit) as exc:
        load_config_or_exit(SHAPES, opts, world_size=1, check=check_model_config)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err


def test_cli_exit_has_no_traceback():
    code = (
        "import sys; from detection.config import load_config_or_exit; "
        "load_config_or_exit(None, sys.argv[1:], world_size=1)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "SOLVER.MAX_ITR", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error: unknown config key SOLVER.MAX_ITR")
