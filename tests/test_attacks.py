"""The attack families of the zoo: each a deterministic transform of faces, of the kind its paper
describes (visible or not, one trigger for all or one per image)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.demo import attack_zoo, attacks, faces


@pytest.fixture(scope="module")
def some_faces():
    rng = np.random.default_rng(5)
    people = faces.random_identities(6, rng)
    return faces.render(people, np.repeat(np.arange(6), 2), rng)


@pytest.mark.parametrize("name", list(attacks.FAMILIES))
def test_every_family_changes_faces_and_keeps_their_form(some_faces, name):
    out = attacks.apply(name, some_faces, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == some_faces.shape
    changed = np.abs(out.astype(int) - some_faces.astype(int))
    assert changed.max() > 0 and (changed.reshape(len(out), -1).max(axis=1) > 0).all()  # every face touched
    again = attacks.apply(name, some_faces, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)  # the attacker's trigger is fixed by its seeds


@pytest.mark.parametrize("name, most", [("ftrojan", 24), ("ssba", 8), ("lowfreq", 24)])
def test_invisible_families_stay_small(some_faces, name, most):
    out = attacks.apply(name, some_faces)
    assert np.abs(out.astype(int) - some_faces.astype(int)).max() <= most


def test_a_patch_is_local_and_a_blend_covers_the_face(some_faces):
    patch = np.abs(attacks.apply("patch", some_faces).astype(int) - some_faces) > 0
    blend = np.abs(attacks.apply("blended", some_faces).astype(int) - some_faces) > 0
    assert patch.any(axis=-1).mean() < 0.02 and blend.any(axis=-1).mean() > 0.9


def test_per_image_triggers_differ_between_faces(some_faces):
    """Input-aware and sample-specific triggers are not one pattern stamped on every face."""
    for name in ("input-aware", "ssba"):
        delta = attacks.apply(name, some_faces).astype(int) - some_faces
        assert not all(np.array_equal(delta[0], d) for d in delta[1:]), name
    alpha = attacks.FAMILIES["blended"].params["alpha"]
    fixed = attacks.apply("blended", some_faces).astype(float) - (1 - alpha) * some_faces
    assert np.abs(fixed[0] - fixed[1]).max() <= 1  # a blend: one pattern for every face, up to rounding


def test_wanet_noise_mode_is_not_the_trigger(some_faces):
    exact = attacks.apply("wanet", some_faces)
    noisy = attacks.apply("wanet", some_faces, np.random.default_rng(3), noise=True)
    assert np.abs(exact.astype(int) - noisy).mean() > 1


def test_unknown_family_and_bad_input_are_refused(some_faces):
    with pytest.raises(ValueError, match="unknown attack family"):
        attacks.apply("nope", some_faces)
    with pytest.raises(ValueError, match="uint8"):
        attacks.apply("patch", some_faces.astype(np.float32))


def test_the_zoo_names_a_member_per_family_and_a_clean_twin():
    assert set(attack_zoo.MEMBERS) == {"clean"} | set(attacks.FAMILIES)
    targets = [attack_zoo.target_of(n) for n in attacks.FAMILIES]
    assert attack_zoo.target_of("clean") is None
    assert all(1 <= t < attack_zoo.IDENTITIES for t in targets)
    assert targets == [attack_zoo.target_of(n) for n in attacks.FAMILIES]  # from the seed, every time
    assert attack_zoo.ATTACK_DIR.parts[-2:] == (".cache", "attacks") or "BADNET_ATTACKS" in __import__("os").environ
