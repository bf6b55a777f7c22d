"""Fuzzing the config loading: random and mutated YAML files and command-line overrides either give a config
or raise ConfigError; nothing else escapes, and no YAML tag runs code."""
import copy
from pathlib import Path

import pytest
import yaml
from fuzzing import FUZZ, nested
from hypothesis import given
from hypothesis import strategies as st

from resdet.config import ConfigError, setup_cfg

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPE = yaml.safe_load((CONFIGS / "toy_frcnn_r18_fpn.yaml").read_text())
RECIPE["_BASE_"] = str(CONFIGS / "Base-RCNN-FPN.yaml")

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8) | st.sampled_from(["(1, 2)", "[[32]]", "1e400", "nan", "", "~", "True", "cuda:9"]))
YAML_VALUES = nested(SCALARS, st.text(max_size=8) | st.sampled_from(["_BASE_", "MODEL", "SOLVER"]))
YAML_PIECES = st.sampled_from(["\n", ": ", "- ", "  ", "{", "}", "[", "]", "'", '"', "&a ", "*a", "!!binary ",
                               "!!python/object/apply:os.system ['touch {marker}']", "%YAML 1.1\n", "---\n", "\t",
                               "_BASE_: missing.yaml\n", "_BASE_: ", "<<: *a\n"])


def _key_paths(node, prefix=()):
    """Every key path of a nested dict, e.g. ("SOLVER", "BASE_LR")."""
    for key, value in node.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _key_paths(value, prefix + (key,))


@st.composite
def mutated_recipes(draw):
    """The toy detection recipe with 1-4 keys set to other values, deleted or added."""
    recipe = copy.deepcopy(RECIPE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_key_paths(recipe))))
        parent = recipe
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "set":
            parent[path[-1]] = draw(YAML_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        else:
            parent[draw(st.text(min_size=1, max_size=8))] = draw(YAML_VALUES)
        if not isinstance(recipe, dict) or not recipe:
            break
    return yaml.safe_dump(recipe)


@st.composite
def edited_text(draw, text: str):
    """`text` with a few YAML-ish pieces inserted or characters deleted."""
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        piece = draw(YAML_PIECES | st.text(max_size=4))
        text = text[:position] + piece + text[position + draw(st.integers(0, 4)):]
    return text


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_configs")


def load_or_refuse(folder, text: str, overrides=()):
    marker = folder / "marker"
    path = folder / "recipe.yaml"
    path.write_text(text.replace("{marker}", str(marker)), encoding="utf-8", errors="surrogatepass")
    try:
        cfg = setup_cfg(str(path), list(overrides))
    except ConfigError:
        return
    finally:
        assert not marker.exists()
    assert cfg.is_frozen()


@FUZZ
@given(text=mutated_recipes())
def test_mutated_recipes(folder, text):
    load_or_refuse(folder, text)


@FUZZ
@given(text=edited_text(yaml.safe_dump(RECIPE)) | st.text(max_size=80)
       | st.lists(YAML_PIECES | st.text(max_size=6), max_size=8).map("".join))
def test_edited_and_random_yaml_text(folder, text):
    load_or_refuse(folder, text)


OVERRIDE_KEYS = st.sampled_from(["SOLVER.BASE_LR", "SOLVER.STEPS", "MODEL.ANCHOR_GENERATOR.SIZES", "INPUT.FORMAT",
                                 "DATASETS.TRAIN", "MODEL.DEVICE", "SOLVER.IMS_PER_BATCH", "MODEL", "NOPE.KEY", "",
                                 "_BASE_", "SOLVER.MAX_ITER"]) | st.text(max_size=12)
OVERRIDE_VALUES = SCALARS.map(str) | st.sampled_from(["(", "[1,", "{'a': 1}", "__import__('os')", "1e999", "-0"])


@FUZZ
@given(overrides=st.lists(OVERRIDE_KEYS | OVERRIDE_VALUES, max_size=6))
def test_random_overrides(folder, overrides):
    load_or_refuse(folder, yaml.safe_dump(RECIPE), overrides)
