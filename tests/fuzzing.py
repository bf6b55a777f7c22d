"""Hypothesis strategies the fuzz tests share (tests/ is on sys.path through its conftest.py)."""
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Bounded so that every fuzz file runs in seconds; no example database is written into the working tree.
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def edited_bytes(draw, valid: bytes):
    """`valid` truncated, or with a few bytes deleted, replaced or inserted."""
    data = bytearray(valid)
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete":
            del data[position:position + draw(st.integers(1, 8))]
        elif action == "replace" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def nested(leaves, key_strategy=None):
    """Lists and dicts (text keys by default) nested a few levels deep around `leaves`."""
    keys = key_strategy if key_strategy is not None else st.text(max_size=8)
    return st.recursive(leaves, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(keys, children, max_size=4), max_leaves=10)
