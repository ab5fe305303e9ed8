"""The tracker, fed detections directly (the unit seam): ids kept across misses, ends, no swaps."""

from __future__ import annotations

from edge_runtime.analytics.tracker import Box, Observed, Tracker, iou_matrix


def box_at(x: float, y: float, w: float = 0.1, h: float = 0.2) -> Box:
    return (x, y, x + w, y + h)


def person(x: float, y: float = 0.3, score: float = 0.9) -> Observed:
    return Observed("person", score, box_at(x, y))


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    m = iou_matrix([(0, 0, 1, 1), (0, 0, 1, 1)], [(0, 0, 1, 1), (2, 2, 3, 3), (0.5, 0, 1.5, 1)])
    assert m[0, 0] == 1.0 and m[0, 1] == 0.0 and abs(m[1, 2] - 1 / 3) < 1e-9


def test_an_id_survives_a_brief_occlusion_and_the_other_track_keeps_its_own() -> None:
    """Two people walk right; the first is hidden for frames 10-14 (no detection) and comes back
    where its velocity says: same id; the second, never hidden, keeps its id throughout."""
    tracker = Tracker(max_misses=6)
    ids_a, ids_b = set(), set()
    for i in range(30):
        dets = [person(0.1 + 0.01 * i, 0.6)]
        if not 10 <= i <= 14:
            dets.insert(0, person(0.02 * i, 0.1))
        ids, ended = tracker.update(dets, i, i / 15)
        assert ended == []
        if len(dets) == 2:
            ids_a.add(ids[0])
        ids_b.add(ids[-1])
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_a_track_ends_after_max_misses_and_a_later_object_gets_a_new_id() -> None:
    tracker = Tracker(max_misses=3)
    first = [tracker.update([person(0.3)], i, float(i))[0][0] for i in range(5)]
    endings = [tracker.update([], i, float(i))[1] for i in range(5, 9)]
    assert [len(e) for e in endings] == [0, 0, 0, 1]  # the fourth miss in a row ends it
    assert endings[-1][0].id == first[0] and endings[-1][0].last_index == 4
    later = tracker.update([person(0.3)], 9, 9.0)[0][0]
    assert len(set(first)) == 1 and later is not None and later != first[0]


def test_crossing_paths_do_not_swap_ids() -> None:
    """Two people of the same label walk towards each other and pass: the velocities keep them."""
    tracker = Tracker()
    history: dict[int, list[float]] = {}
    for i in range(40):
        left, right = 0.1 + 0.02 * i, 0.8 - 0.02 * i
        ids, _ = tracker.update([person(left, 0.30), person(right, 0.34)], i, float(i))
        for track_id, x in zip(ids, (left, right), strict=True):
            assert track_id is not None
            history.setdefault(track_id, []).append(x)
    assert len(history) == 2
    moves = sorted(xs[-1] - xs[0] for xs in history.values())
    assert moves[0] < -0.7 and moves[1] > 0.7  # each id kept one direction all along


def test_low_scores_keep_a_track_alive_but_start_none() -> None:
    tracker = Tracker(high_score=0.5, low_score=0.1, max_misses=0)
    tracker.update([person(0.3)], 0, 0.0)
    tracker.update([person(0.31)], 1, 0.1)
    ids, ended = tracker.update([person(0.32, score=0.2), person(0.7, score=0.3)], 2, 0.2)
    assert ids[0] == 1 and ids[1] is None and ended == []


def test_unconfirmed_tracks_end_at_their_first_miss_and_confirm_after_min_hits() -> None:
    tracker = Tracker(min_hits=3, max_misses=5)
    tracker.update([person(0.3)], 0, 0.0)
    assert tracker.tracks[0].confirmed is False
    assert len(tracker.update([], 1, 0.1)[1]) == 1  # a one-frame blip
    for i in range(2, 5):
        tracker.update([person(0.3)], i, i / 10)
    assert tracker.tracks[0].confirmed is True


def test_skipped_frames_are_predicted_across() -> None:
    """After a few frames in a row, inference on every fourth frame only: the object moves 1.6
    box widths between inferences (no overlap with its last box) and is still matched, because
    the prediction steps as many frames as were skipped."""
    tracker = Tracker()
    frames = [*range(6), *range(9, 60, 4)]
    ids = {tracker.update([person(0.04 * i, 0.3)], i, i / 15)[0][0] for i in frames}
    assert ids == {1}


def test_labels_filter_and_labels_never_match_each_other() -> None:
    tracker = Tracker(labels=["person", "car"])
    ids, _ = tracker.update([person(0.3), Observed("dog", 0.9, box_at(0.5, 0.5))], 0, 0.0)
    assert ids == [1, None]
    ids, _ = tracker.update([Observed("car", 0.9, box_at(0.3, 0.3))], 1, 0.1)
    assert ids == [2]  # same place as the person, another label: another track


def test_max_age_ends_a_track_not_seen_for_that_long() -> None:
    tracker = Tracker(max_misses=1000, max_age_s=2.0)
    tracker.update([person(0.3)], 0, 0.0)
    tracker.update([person(0.3)], 1, 0.5)
    assert tracker.update([], 2, 2.0)[1] == []
    assert [t.id for t in tracker.update([], 3, 2.6)[1]] == [1]
