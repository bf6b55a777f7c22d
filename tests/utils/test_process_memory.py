"""process_memory: a process tree's PSS, checked against memory a child process provably holds on its own."""
import os
import subprocess
import sys
import time

from resdet.utils.process_memory import process_tree, pss_mb, tree_pss_mb

# A child that writes 300 MiB of its own pages, says so, and waits.
HOLD = ("import time; block = bytearray(300 << 20); block[::4096] = b'x' * len(block[::4096]); "
        "print('ready', flush=True); time.sleep(60)")


def test_tree_pss_counts_a_child_s_private_memory():
    before = tree_pss_mb(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert child.pid in process_tree(os.getpid())
        assert 290 < pss_mb(child.pid) < 400  # the 300 MiB block plus an interpreter
        grown = tree_pss_mb(os.getpid()) - before
        assert 290 < grown < 400
    finally:
        child.kill()
        child.wait()
    time.sleep(0.1)
    assert child.pid not in process_tree(os.getpid()) and pss_mb(child.pid) == 0.0
