"""Which person boxes are one person seen twice (``drop_duplicate_persons``): a weak loose
double, or a box nested in a stronger one with no face of its own, is dropped; a box
holding a face nobody else owns is somebody and stays."""

from __future__ import annotations

from deskwatch.domain import Box, Detection, Face
from deskwatch.vision.pipeline import drop_duplicate_persons


def person(score: float, *box: float) -> Detection:
    return Detection("person", score, Box(*box))


def face(*box: float) -> Face:
    return Face(Box(*box), 0.9)


def test_a_strong_box_nested_in_a_stronger_one_without_a_face_is_a_fragment() -> None:
    # phone_desk_06 seen from above: the worker's arms and back (0.58) and their right half (0.56)
    whole, half = person(0.58, 0.05, 0.01, 1.0, 1.0), person(0.56, 0.48, 0.03, 1.0, 1.0)
    assert drop_duplicate_persons([whole, half], []) == [whole]


def test_a_loose_box_around_a_stronger_one_without_a_face_is_the_same_person() -> None:
    # eat_02 darkened: a 0.51 box around the man's own 0.84 one (which owns his face)
    own, loose = person(0.84, 0.34, 0.09, 0.92, 0.99), person(0.51, 0.01, 0.01, 0.95, 0.99)
    assert drop_duplicate_persons([own, loose], [face(0.5, 0.15, 0.7, 0.45)]) == [own]


def test_a_nested_box_with_a_face_of_its_own_is_another_person() -> None:
    # a child in front of the worker: inside the worker's box, but with a face nobody else owns
    worker, child = person(0.8, 0.2, 0.05, 0.9, 1.0), person(0.6, 0.45, 0.5, 0.85, 1.0)
    faces = [face(0.45, 0.1, 0.6, 0.3), face(0.55, 0.56, 0.7, 0.68)]  # the child's below the worker's upper half
    assert drop_duplicate_persons([worker, child], faces) == [worker, child]


def test_overlapping_people_side_by_side_both_stay() -> None:
    # two people, boxes overlapping by a third: neither is inside the other
    left, right = person(0.7, 0.1, 0.1, 0.55, 1.0), person(0.65, 0.4, 0.1, 0.85, 1.0)
    assert drop_duplicate_persons([left, right], []) == [left, right]


def test_a_tilted_cameras_faceless_second_box_on_the_worker_is_no_second_person() -> None:
    # nophone_hand_02 tilted -10 degrees: the worker's 0.82 box with their face, and a 0.551
    # faceless box 89 % inside it (just under PERSON_NESTED): it made an extra_person
    worker, second = person(0.82, 0.06, 0.18, 0.99, 1.0), person(0.551, 0.0, 0.22, 0.53, 1.0)
    assert drop_duplicate_persons([worker, second], [face(0.41, 0.3, 0.66, 0.67)]) == [worker]
    # phone_desk_04 tilted +10 degrees, seen from above, no face: 0.55 and a 0.50 box 73 % inside it
    back, arms = person(0.551, 0.01, 0.0, 0.61, 1.0), person(0.5, 0.02, 0.46, 0.83, 1.0)
    assert drop_duplicate_persons([back, arms], []) == [back]


def test_a_weak_loose_double_is_dropped_but_a_strong_one_half_inside_stays() -> None:
    main = person(0.8, 0.2, 0.1, 0.7, 1.0)
    loose = person(0.3, 0.15, 0.05, 0.75, 1.0)  # weak, 79 % of it inside main
    strong_half = person(0.6, 0.5, 0.1, 0.95, 1.0)  # strong, 44 % of it inside main: a neighbour
    assert drop_duplicate_persons([main, loose, strong_half], []) == [main, strong_half]
