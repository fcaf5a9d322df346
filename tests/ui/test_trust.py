"""Explore's Trust expander: on demand, the random-logit similarity and the deletion AUC of the map on screen
against the random control."""

from __future__ import annotations

from tests.ui.helpers import start, texts
from ui import state


def test_the_trust_expander_checks_the_map_on_screen_on_demand():
    at = start(timeout=600)
    assert not at.metric  # nothing computed before the click
    at.button(key=state.TRUST_RUN).click().run()
    assert not at.exception and not at.error
    assert not [b for b in at.button if b.key == state.TRUST_RUN]  # no button left beside the answer
    similarity, deletion = (m.value for m in at.metric)
    assert -1 <= float(similarity) < 0.9  # vanilla depends on the class (Adebayo et al.: it passes)
    assert 0 <= float(deletion) <= 1
    assert any("(32×32 px regions, mean fill)" in t for t in texts(at))
    at.selectbox(key=state.METHOD).set_value("guided_backprop").run()
    at.button(key=state.TRUST_RUN).click().run()
    assert not at.exception and not at.error
    assert float(at.metric[0].value) >= 0.9  # guided backprop: the same map for any class
    assert any("Class-insensitive" in t for t in texts(at))


def test_a_contrast_or_a_control_is_not_checked():
    at = start()
    at.segmented_control(key=state.TARGET_MODE).set_value("Contrast").run()
    assert not at.exception and not at.error
    assert not [b for b in at.button if b.key == state.TRUST_RUN]
    assert "Available for single-class targets of an explanation method." in texts(at)
    at.segmented_control(key=state.TARGET_MODE).set_value("Predicted").run()
    assert [b for b in at.button if b.key == state.TRUST_RUN]
    at.selectbox(key=state.METHOD).set_value("random").run()
    assert not [b for b in at.button if b.key == state.TRUST_RUN]
