"""Anatomy helpers at the edges of the volume."""

from her2pcr.synth.anatomy import _local_box


def test_local_box_is_clipped_and_empty_when_wholly_outside_the_volume():
    assert _local_box((5.0, 5.0), (2.0, 10.0), (40, 8)) == (slice(3, 8), slice(0, 8))
    # a spicule whose box lies past either end of the slab gets an empty box, not a wrapped slice
    for centre in (-6.0, 47.0):
        box = _local_box((centre,), (2.0,), (40,))[0]
        assert box.start == box.stop and 0 <= box.start <= 40
