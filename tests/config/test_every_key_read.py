"""No config key is read by nothing: every default key is read somewhere in resdet/ or tools/ (a key that does
nothing, silently, is a defect). Reading means an attribute access `.KEY` or the dotted name in a string, outside
the files that only declare or validate keys."""
import glob
import os
import re

import pytest

import resdet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DECLARING = {os.path.join("resdet", "config", "defaults.py"), os.path.join("resdet", "config", "validation.py")}


def _leaf_keys(node, prefix=""):
    for name, value in node.items():
        if isinstance(value, resdet.config.CfgNode):
            yield from _leaf_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def _sources() -> str:
    files = glob.glob(os.path.join(REPO, "resdet", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(REPO, "tools", "*.py"))
    return "\n".join(open(path).read() for path in files if os.path.relpath(path, REPO) not in DECLARING)


def unread_keys(cfg, code: str):
    """The leaf keys of `cfg` that `code` neither reads as an attribute nor names in full in a string."""
    return [key for key in _leaf_keys(cfg)
            if not re.search(rf"\.{key.split('.')[-1]}\b", code) and f'"{key}"' not in code]


def test_every_default_key_is_read():
    unread = unread_keys(resdet.get_cfg(), _sources())
    assert not unread, f"config keys nothing reads: {unread}"


def test_the_check_reports_a_key_nothing_reads():
    cfg = resdet.get_cfg()
    cfg.TEST.AUG.SHARPEN = True  # declared here only
    assert unread_keys(cfg, _sources()) == ["TEST.AUG.SHARPEN"]


def test_version_is_read_a_file_of_another_version_is_refused(tmp_path):
    path = tmp_path / "d2.yaml"
    path.write_text("VERSION: 2\nMODEL:\n  WEIGHTS: ''\n")
    with pytest.raises(resdet.config.ConfigError, match=r"d2.yaml: VERSION is 2.*config version 1"):
        resdet.get_cfg().merge_from_file(str(path))
    path.write_text("VERSION: 1\nSEED: 3\n")
    cfg = resdet.get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.SEED == 3
