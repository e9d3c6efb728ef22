"""Property: any interleaving of edits and deliveries converges at both ends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.reconcile import HQ, NODE, STATUSES, Edit, RecordState, apply

FIELDS = ["status", "status_note", "fields", "notes", "documents", "service_code", "unknown"]

edits = st.lists(
    st.builds(
        Edit,
        record_id=st.just("r1"),
        field=st.sampled_from(FIELDS),
        value=st.one_of(st.sampled_from(STATUSES), st.text(max_size=3)),
        hlc=st.integers(0, 20),
        origin=st.sampled_from([NODE, HQ]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(edits, st.randoms(use_true_random=False), st.randoms(use_true_random=False))
def test_any_interleaving_converges(all_edits: list[Edit], r1: object, r2: object) -> None:
    node, hq = RecordState(), RecordState()
    # Each end applies its own edits in creation order, then receives the other's
    # in a random order, with random duplicate deliveries.
    own_node = [e for e in all_edits if e.origin == NODE]
    own_hq = [e for e in all_edits if e.origin == HQ]
    to_hq = own_node + own_node[: len(own_node) // 2]
    to_node = own_hq + own_hq[::2]
    r1.shuffle(to_hq)  # type: ignore[attr-defined]
    r2.shuffle(to_node)  # type: ignore[attr-defined]
    for e in own_node:
        apply(node, e)
    for e in own_hq:
        apply(hq, e)
    for e in to_node:
        apply(node, e)
    for e in to_hq:
        apply(hq, e)
    assert node.view() == hq.view()
    # and equal to applying everything once in the canonical order
    ref = RecordState()
    for e in sorted(all_edits, key=lambda e: (e.hlc, e.origin, repr(e.value))):
        apply(ref, e)
    assert ref.view() == node.view()


def test_ownership_hq_cannot_edit_node_fields_and_node_cannot_set_status() -> None:
    s = RecordState()
    assert not apply(s, Edit("r", "notes", "x", 5, HQ))
    assert not apply(s, Edit("r", "status", "issued", 5, NODE))
    assert apply(s, Edit("r", "status", "ready", 5, HQ))
    assert not apply(s, Edit("r", "status", "accepted", 4, HQ))  # older loses
    assert apply(s, Edit("r", "status", "issued", 6, HQ))
    assert s.view()["status"] == "issued"
