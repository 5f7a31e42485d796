"""An attack zoo at two scales: one DeepID BadNet per attack family, and a clean twin.

Each member is trained from a seed on :mod:`engine.demo.faces` identities for fifteen epochs, with
one family of :mod:`engine.demo.attacks`:

- dirty-label families: 10 % of the training faces, drawn from every class but the target, get
  the trigger and the target's label;
- ``sig`` (clean-label): the target class's own training faces get the signal, labels untouched;
- ``wanet`` also trains on 20 % of faces under a noise-perturbed warp with their true labels.

Two scales (:data:`SCALES`):

- ``demo``: 50 identities with 80 training faces each, as the demo; the per-image figures;
- ``large``: 400 identities with 25 training faces each, for the model level. A trigger scan
  ranks every class against the others with a robust outlier test; with 50 classes it has few
  innocent classes to be fooled by and can afford to examine each, while CSAW has 1283. At 400
  the innocent classes' own spread is CSAW's kind of problem (a scan must pick candidates, and
  an outlier test meets hundreds of innocent values), the clean faces a scan sees are under one
  per class, and a member still trains in about two minutes on two cores.

A member is a folder under ``.cache/attacks`` (``.cache/attacks-large``; or ``$BADNET_ATTACKS``),
never committed: ``model.h5``; ``clean_validation.h5`` and ``clean_test.h5`` (faces of every
identity never seen in training: thresholds are set on the first and false rejection measured on
the second); ``poisoned.h5`` (300 faces of other identities with the trigger, labelled with the
target) and ``facts.json`` (the family, target, clean accuracy and attack success on those
held-out faces). ``python -m engine.demo.attack_zoo [--large]`` builds the missing members; CI
never does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import engine  # noqa: F401  (sets TensorFlow's environment before it is imported)
from engine.demo import ROOT, attacks, build_missing, faces, write_official_h5


@dataclass(frozen=True)
class Scale:
    """How large a zoo is: identities, training faces per identity and where its members are cached."""
    name: str
    identities: int
    train_per_identity: int
    held_out_per_identity: int  # in each of clean_validation.h5 and clean_test.h5
    folder: str  # under .cache/


SCALES = {s.name: s for s in (Scale("demo", 50, 80, 6, "attacks"), Scale("large", 400, 25, 2, "attacks-large"))}
DEMO = SCALES["demo"]
IDENTITIES = DEMO.identities
POISON_SHARE = 0.1
NOISE_SHARE = 0.2  # WaNet's noise mode
POISONED_TEST = 300
EPOCHS = 15  # five more than the demo: global and invisible triggers need them to take hold
SEED = 3030
CLEAN = "clean"
MEMBERS = (CLEAN,) + tuple(attacks.FAMILIES)


def root(scale: Scale = DEMO) -> Path:
    """The folder holding the members of a scale (``$BADNET_ATTACKS`` overrides the cache)."""
    env = os.environ.get("BADNET_ATTACKS")
    if env:
        return Path(env) if scale is DEMO else Path(env).with_name(Path(env).name + "-" + scale.name)
    return ROOT / ".cache" / scale.folder


ATTACK_DIR = root(DEMO)


def folder(name: str, scale: Scale = DEMO) -> Path:
    """The folder of one member at a scale."""
    return root(scale) / name


def built(name: str, scale: Scale = DEMO) -> bool:
    """Whether a member has been built (its facts.json is written last)."""
    return (folder(name, scale) / "facts.json").exists()


def facts(name: str, scale: Scale = DEMO) -> dict:
    """A built member's facts: family, target, clean accuracy, attack success."""
    return json.loads((folder(name, scale) / "facts.json").read_text())


def member_seed(name: str) -> int:
    """The seed a member is trained from (one per member, the same at every scale)."""
    return SEED + MEMBERS.index(name)


def target_of(name: str, scale: Scale = DEMO) -> int | None:
    """The member's target, drawn from its seed (never class 0: nothing may hinge on an index)."""
    if name == CLEAN:
        return None
    return int(np.random.default_rng(member_seed(name)).integers(1, scale.identities))


def train(name: str, verbose: int = 2, scale: Scale = DEMO) -> dict:
    """Render the faces, poison them as the family does, train, measure, write the folder whole."""
    import keras
    import tensorflow as tf

    from engine.io.models import build_deepid

    if name not in MEMBERS:
        raise ValueError(f"unknown member {name!r}; choose from {', '.join(MEMBERS)}")
    started = time.perf_counter()
    seed = member_seed(name)
    keras.utils.set_random_seed(seed)
    # The same identities and clean faces for every member (seeded by SEED), so the clean twin is a twin.
    n_ids = scale.identities
    people = faces.random_identities(n_ids, np.random.default_rng(SEED))
    clean_rng = np.random.default_rng([SEED, 1])
    ids = np.repeat(np.arange(n_ids), scale.train_per_identity)
    x_train = faces.render(people, ids, clean_rng)
    held_ids = np.repeat(np.arange(n_ids), scale.held_out_per_identity)
    x_val = faces.render(people, held_ids, np.random.default_rng([SEED, 2]))
    x_test = faces.render(people, held_ids, np.random.default_rng([SEED, 3]))

    target = target_of(name, scale)
    poison_rng = np.random.default_rng([seed, 4])
    xs, ys, poisoned = [x_train], [ids], 0
    if target is not None:
        family = attacks.FAMILIES[name]
        if family.clean_label:
            chosen = ids == target
            x_train = x_train.copy()
            x_train[chosen] = attacks.apply(name, x_train[chosen], poison_rng)
            xs = [x_train]
            poisoned = int(chosen.sum())
        else:
            chosen = (poison_rng.random(len(ids)) < POISON_SHARE) & (ids != target)
            xs.append(attacks.apply(name, x_train[chosen], poison_rng))
            ys.append(np.full(int(chosen.sum()), target))
            poisoned = int(chosen.sum())
        if family.noise_mode:
            noisy = poison_rng.random(len(ids)) < NOISE_SHARE
            xs.append(attacks.apply(name, x_train[noisy], poison_rng, noise=True))
            ys.append(ids[noisy])
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    del xs
    order = np.random.default_rng([seed, 5]).permutation(len(x_all))
    x_all, y_all = x_all[order], y_all[order]

    test_rng = np.random.default_rng([seed, 6])
    x_bad = None
    if target is not None:
        victims = test_rng.choice(np.setdiff1d(np.arange(n_ids), [target]), POISONED_TEST)
        x_bad = attacks.apply(name, faces.render(people, victims, test_rng), test_rng)

    model = build_deepid(n_ids)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    data = tf.data.Dataset.from_tensor_slices((x_all, y_all)).shuffle(8192, seed=seed)
    data = data.batch(64).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    model.fit(data.prefetch(2), epochs=EPOCHS, verbose=verbose, shuffle=False)  # (the dataset is shuffled)

    def predicted(x):
        return model.predict(x.astype(np.float32) / 255.0, batch_size=512, verbose=0).argmax(1)

    result = {
        "member": name,
        "scale": scale.name,
        "identities": n_ids,
        "family": None if target is None else {"title": attacks.FAMILIES[name].title,
                                               "paper": attacks.FAMILIES[name].paper,
                                               "params": attacks.FAMILIES[name].params,
                                               "clean_label": attacks.FAMILIES[name].clean_label},
        "seed": seed,
        "target": target,
        "train_images": int(len(x_all)),
        "poisoned_train_images": poisoned,
        "epochs": EPOCHS,
        "clean_accuracy": float(np.mean(predicted(x_test) == held_ids)),
        "attack_success_rate": None if x_bad is None else float(np.mean(predicted(x_bad) == target)),
        "seconds": round(time.perf_counter() - started, 1),
        "scaling": "1/255",
    }

    final = build_deepid(n_ids)
    final.set_weights(model.get_weights())
    stage = folder(name, scale).with_name(name + ".building")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    final.save(stage / "model.h5")
    write_official_h5(stage / "clean_validation.h5", x_val, held_ids)
    write_official_h5(stage / "clean_test.h5", x_test, held_ids)
    if x_bad is not None:
        write_official_h5(stage / "poisoned.h5", x_bad, np.full(len(x_bad), target))
    (stage / "facts.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(folder(name, scale), ignore_errors=True)
    stage.rename(folder(name, scale))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.demo.attack_zoo [--large] [names]``: build the missing members."""
    argv = list(sys.argv[1:] if argv is None else argv)
    scale = DEMO
    if "--large" in argv:
        argv.remove("--large")
        scale = SCALES["large"]

    def build(name: str) -> str:
        result = train(name, verbose=0, scale=scale)
        return (f"{name}: clean accuracy {result['clean_accuracy']:.3f}, attack success "
                f"{result['attack_success_rate']}, {result['seconds']} s")

    return build_missing(argv, "python -m engine.demo.attack_zoo [--large]",
                         __doc__.splitlines()[0] + " (--large: the 400-identity scale)", MEMBERS,
                         lambda n: built(n, scale), lambda n: folder(n, scale), build)


if __name__ == "__main__":
    raise SystemExit(main())
