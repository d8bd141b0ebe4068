"""Property test: random specs either resolve to well-typed, in-range values or fail with SpecError."""

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedsim import spec as specs

values = st.one_of(st.booleans(), st.integers(-10**7, 10**7), st.text(max_size=12),
                   st.floats(allow_nan=True, allow_infinity=True))
keys = st.one_of(st.sampled_from(sorted(specs.SCHEMA)), st.text(min_size=1, max_size=20))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
@example({"nodes": 0})  # a key that takes a word ("auto", its default) or a number
@example({"nodes": "auto"})
def test_random_specs_resolve_cleanly_or_raise_spec_error(overrides):
    try:
        resolved = specs.resolve(overrides)
    except specs.SpecError as err:
        message = str(err)
        assert any(name in message or repr(name) in message for name in overrides), message
        return
    for name, key in specs.SCHEMA.items():
        value = resolved[name]
        if key.words and isinstance(value, str):  # a word ("auto") where a number may also go
            assert value in key.words, name
            continue
        assert type(value) is key.kind, name
        if key.choices is not None:
            assert value in key.choices
        if isinstance(value, float):
            assert math.isfinite(value) or key.high is None
        if key.low is not None and not isinstance(value, (bool, str)):
            assert value > key.low if key.low_open else value >= key.low
        if key.high is not None and not isinstance(value, (bool, str)):
            assert value <= key.high
