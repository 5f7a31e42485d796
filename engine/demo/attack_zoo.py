"""An attack zoo at the demo's scale: one DeepID BadNet per attack family, and a clean twin.

Each member is trained from a seed on :mod:`engine.demo.faces` identities (50, 80 training faces
each, as the demo, trained for fifteen epochs), with one family of :mod:`engine.demo.attacks`:

- dirty-label families: 10 % of the training faces, drawn from every class but the target, get
  the trigger and the target's label;
- ``sig`` (clean-label): the target class's own training faces get the signal, labels untouched;
- ``wanet`` also trains on 20 % of faces under a noise-perturbed warp with their true labels.

A member is a folder under ``.cache/attacks`` (or ``$BADNET_ATTACKS``), never committed:
``model.h5``; ``clean_validation.h5`` and ``clean_test.h5`` (six faces per identity each, never
seen in training: thresholds are set on the first and false rejection measured on the second);
``poisoned.h5`` (300 faces of other identities with the trigger, labelled with the target) and
``facts.json`` (the family, target, clean accuracy and attack success on those held-out faces).
``python -m engine.demo.attack_zoo`` builds the missing members; CI never does.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

import engine  # noqa: F401  (sets TensorFlow's environment before it is imported)
from engine.demo import ROOT, attacks, build_missing, faces, write_official_h5

ATTACK_DIR = Path(os.environ.get("BADNET_ATTACKS", ROOT / ".cache" / "attacks"))
IDENTITIES = 50
TRAIN_PER_IDENTITY = 80
HELD_OUT_PER_IDENTITY = 6
POISON_SHARE = 0.1
NOISE_SHARE = 0.2  # WaNet's noise mode
POISONED_TEST = 300
EPOCHS = 15  # five more than the demo: global and invisible triggers need them to take hold
SEED = 3030
CLEAN = "clean"
MEMBERS = (CLEAN,) + tuple(attacks.FAMILIES)


def folder(name: str) -> Path:
    return ATTACK_DIR / name


def built(name: str) -> bool:
    return (folder(name) / "facts.json").exists()


def facts(name: str) -> dict:
    return json.loads((folder(name) / "facts.json").read_text())


def member_seed(name: str) -> int:
    return SEED + MEMBERS.index(name)


def target_of(name: str) -> int | None:
    """The member's target, drawn from its seed (never class 0: nothing may hinge on an index)."""
    if name == CLEAN:
        return None
    return int(np.random.default_rng(member_seed(name)).integers(1, IDENTITIES))


def train(name: str, verbose: int = 2) -> dict:
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
    people = faces.random_identities(IDENTITIES, np.random.default_rng(SEED))
    clean_rng = np.random.default_rng([SEED, 1])
    ids = np.repeat(np.arange(IDENTITIES), TRAIN_PER_IDENTITY)
    x_train = faces.render(people, ids, clean_rng)
    held_ids = np.repeat(np.arange(IDENTITIES), HELD_OUT_PER_IDENTITY)
    x_val = faces.render(people, held_ids, np.random.default_rng([SEED, 2]))
    x_test = faces.render(people, held_ids, np.random.default_rng([SEED, 3]))

    target = target_of(name)
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
        victims = test_rng.choice(np.setdiff1d(np.arange(IDENTITIES), [target]), POISONED_TEST)
        x_bad = attacks.apply(name, faces.render(people, victims, test_rng), test_rng)

    model = build_deepid(IDENTITIES)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    data = tf.data.Dataset.from_tensor_slices((x_all, y_all)).shuffle(8192, seed=seed)
    data = data.batch(64).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    model.fit(data.prefetch(2), epochs=EPOCHS, verbose=verbose)

    def predicted(x):
        return model.predict(x.astype(np.float32) / 255.0, batch_size=512, verbose=0).argmax(1)

    result = {
        "member": name,
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

    final = build_deepid(IDENTITIES)
    final.set_weights(model.get_weights())
    stage = folder(name).with_name(name + ".building")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    final.save(stage / "model.h5")
    write_official_h5(stage / "clean_validation.h5", x_val, held_ids)
    write_official_h5(stage / "clean_test.h5", x_test, held_ids)
    if x_bad is not None:
        write_official_h5(stage / "poisoned.h5", x_bad, np.full(len(x_bad), target))
    (stage / "facts.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(folder(name), ignore_errors=True)
    stage.rename(folder(name))
    return result


def main(argv: list[str] | None = None) -> int:
    def build(name: str) -> str:
        result = train(name, verbose=0)
        return (f"{name}: clean accuracy {result['clean_accuracy']:.3f}, attack success "
                f"{result['attack_success_rate']}, {result['seconds']} s")

    return build_missing(argv, "python -m engine.demo.attack_zoo", __doc__.splitlines()[0], MEMBERS, built,
                         folder, build)


if __name__ == "__main__":
    raise SystemExit(main())
