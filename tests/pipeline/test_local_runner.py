"""The in-process runner's memory management: what it freezes for a run, and that it gives it back."""
import gc
import weakref

from pipeline.local_runner import long_lived_objects_frozen


class _Node:
    def __init__(self):
        self.other = self


def test_a_run_freezes_what_lives_collects_garbage_first_and_thaws_at_the_end():
    assert gc.get_freeze_count() == 0
    kept, garbage = _Node(), _Node()  # both in reference cycles: only the collector frees them
    gone = weakref.ref(garbage)
    del garbage
    with long_lived_objects_frozen():
        assert gone() is None  # collected before the freeze, not kept for the process's lifetime
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # everything the interpreter and the imported libraries hold
        assert not any(o is kept for o in gc.get_objects())  # out of every generation: no collection walks it
        fresh = _Node()
        assert any(o is fresh for o in gc.get_objects(generation=0))  # what the run allocates is still collected
    assert gc.get_freeze_count() == 0
    assert any(o is kept for o in gc.get_objects())
