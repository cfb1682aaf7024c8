"""Beam's memoized signatures (pipeline/beam_signatures.py): the same answers, once per function, nothing kept."""
import functools
import gc
import inspect

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.typehints import decorators

from pipeline import beam_signatures


class _Buffering(beam.DoFn):
    """A stateful DoFn: its state and timer are found only through its methods' signatures."""

    BUFFER = userstate.BagStateSpec("buffer", VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element, buffer=beam.DoFn.StateParam(BUFFER), flush=beam.DoFn.TimerParam(FLUSH)):
        buffer.add(element[1])
        flush.set(0)

    @userstate.on_timer(FLUSH)
    def flushed(self, key=beam.DoFn.KeyParam, buffer=beam.DoFn.StateParam(BUFFER)):
        yield key, sorted(buffer.read())


def test_signatures_equal_beams_and_are_computed_once_per_function():
    original = getattr(decorators.get_signature, "__wrapped__", decorators.get_signature)
    calls = []
    cached = beam_signatures.memoized(lambda func: calls.append(func) or original(func))

    def plain(a, b=2, *rest, c, **more):
        return a

    class Callable:
        def __call__(self, x, y=1):
            return x

    dofn = _Buffering()
    for func in (plain, dofn.process, _Buffering.process, str.strip, len, Callable(), functools.partial(plain, 1)):
        assert cached(func) == original(func), func
    assert list(cached(dofn.process).parameters)[0] == "element"  # bound: self dropped, as inspect does
    assert list(cached(_Buffering.process).parameters)[0] == "self"
    before = len(calls)
    for _ in range(3):
        cached(plain), cached(_Buffering().process), cached(_Buffering.process)
    assert len(calls) == before  # every further look, at any instance, is a lookup
    cached(str.strip), cached(len)
    assert len(calls) == before + 2  # builtins and callable objects are computed as before


def test_a_pipelines_functions_are_not_kept_alive_by_the_cache():
    cached = beam_signatures.memoized(getattr(decorators.get_signature, "__wrapped__", decorators.get_signature))
    cached(lambda x, y=1: x)
    cached(_Buffering.process)
    gc.collect()
    assert list(cached.cache.keys()) == [_Buffering.process]


def test_installed_beam_still_finds_and_runs_a_stateful_dofns_state_and_timer():
    beam_signatures.install()
    beam_signatures.install()  # idempotent: one layer of caching
    assert core.get_signature is decorators.get_signature
    assert decorators.get_signature.__wrapped__ is not None
    assert not hasattr(decorators.get_signature.__wrapped__, "__wrapped__")

    states, timers = userstate.get_dofn_specs(_Buffering())
    assert states == {_Buffering.BUFFER} and timers == {_Buffering.FLUSH}
    assert userstate.is_stateful_dofn(_Buffering()) and not userstate.is_stateful_dofn(beam.Map(len).fn)
    assert inspect.signature(_Buffering().process) == core.get_signature(_Buffering().process)

    with beam.Pipeline("DirectRunner") as p:
        flushed = (p | beam.Create([("a", 3), ("a", 1), ("b", 2)]) | beam.ParDo(_Buffering()))
        assert_that(flushed, equal_to([("a", [1, 3]), ("b", [2])]))
