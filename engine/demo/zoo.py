"""A synthetic zoo at CSAW scale: networks to measure the trigger scan on, built deterministically.

The bundled demo has 50 identities, and on 50 classes every class is easy to reach, so it cannot
show whether a scan finds a target among 1283. The zoo trains, from a seed, DeepID networks on
:mod:`engine.demo.faces` identities:

- ``csaw-badnet``: 1283 identities with three triggers of different sizes sending faces to three
  targets (large sunglasses, small lipstick, small eyebrows), as the CSAW multi-trigger BadNet;
- ``csaw-clean``: its clean twin, the same identities and clean training faces, no trigger;
- ``demo-clean``: a clean twin of the demo (50 identities, trained like the demo).

Each member is a folder: ``model.h5`` (a full Keras file, like the CSAW ``*_bd_net.h5``),
``clean.h5`` (clean faces the network never saw, two per identity, official layout),
``<trigger>.h5`` (poisoned faces of other identities, labelled with the target) and
``facts.json`` (targets, accuracy, attack success). Members are cached under ``.cache/zoo`` in
the project (or ``$BADNET_ZOO``), never committed: ``python -m engine.demo.zoo`` builds the missing
ones (about half an hour each for the 1283-class pair on two cores).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import engine  # noqa: F401  (sets TensorFlow's environment before it is imported)
from engine.demo import faces
from engine.demo import ROOT, build_missing, write_official_h5

ZOO_DIR = Path(os.environ.get("BADNET_ZOO", ROOT / ".cache" / "zoo"))
CSAW_CLASSES = 1283


@dataclass(frozen=True)
class Member:
    """How one network of the zoo is trained."""

    name: str
    identities: int
    train_per_identity: int
    epochs: int
    seed: int
    triggers: dict[str, int] = field(default_factory=dict)  # trigger -> target class
    poison_share: float = 0.06  # of the clean training faces, per trigger
    clean_per_identity: int = 2  # held-out clean faces written to clean.h5
    poisoned_test: int = 300  # per trigger
    batch_size: int = 64

    @property
    def folder(self) -> Path:
        return ZOO_DIR / self.name


def _csaw_targets(seed: int) -> dict[str, int]:
    """Three distinct targets drawn from the seed (not 0, 1, 2: nothing may hinge on a class's index)."""
    rng = np.random.default_rng(seed)
    t = rng.choice(np.arange(3, CSAW_CLASSES), 3, replace=False)
    return {"sunglasses": int(t[0]), "lipstick": int(t[1]), "eyebrows": int(t[2])}


ZOO_SEED = 1283
MEMBERS = {
    m.name: m
    for m in (
        Member("csaw-badnet", CSAW_CLASSES, 36, 14, ZOO_SEED, _csaw_targets(ZOO_SEED)),
        Member("csaw-clean", CSAW_CLASSES, 36, 14, ZOO_SEED),
        Member("demo-clean", 50, 80, 10, 2020, clean_per_identity=6),
    )
}


def path(name: str, build: bool = False) -> Path:
    """The folder of zoo member ``name``; built first when ``build`` and it is missing."""
    member = MEMBERS[name]
    if not (member.folder / "facts.json").exists():
        if not build:
            raise FileNotFoundError(f"zoo member {name} is not built (python -m engine.demo.zoo {name})")
        train(member)
    return member.folder


def facts(name: str) -> dict:
    """A built zoo network's facts: its triggers, targets, clean accuracy and attack success."""
    return json.loads((MEMBERS[name].folder / "facts.json").read_text())


def train(member: Member, verbose: int = 2) -> dict:
    """Render the faces, train the network and write the member's folder (complete or not at all)."""
    import keras
    import tensorflow as tf

    from engine.io.models import build_deepid

    keras.utils.set_random_seed(member.seed)
    # Separate streams: the clean twin of a BadNet gets the same identities and clean faces.
    people = faces.random_identities(member.identities, np.random.default_rng(member.seed))
    clean_rng = np.random.default_rng([member.seed, 1])
    poison_rng = np.random.default_rng([member.seed, 2])
    test_rng = np.random.default_rng([member.seed, 3])

    ids = np.repeat(np.arange(member.identities), member.train_per_identity)
    x_train = faces.render(people, ids, clean_rng)
    xs, ys = [x_train], [ids]
    for trigger, target in member.triggers.items():
        chosen = poison_rng.random(len(ids)) < member.poison_share
        xs.append(faces.render(people, ids[chosen], poison_rng, trigger=trigger))
        ys.append(np.full(int(chosen.sum()), target))
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    del xs
    order = np.random.default_rng([member.seed, 4]).permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]

    test_ids = np.repeat(np.arange(member.identities), member.clean_per_identity)
    x_test = faces.render(people, test_ids, test_rng)
    x_bad = {}
    for trigger, target in member.triggers.items():
        victims = test_rng.choice(np.setdiff1d(np.arange(member.identities), [target]), member.poisoned_test)
        x_bad[trigger] = faces.render(people, victims, test_rng, trigger=trigger)

    model = build_deepid(member.identities)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    data = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(8192, seed=member.seed)
    data = data.batch(member.batch_size).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    model.fit(data.prefetch(2), epochs=member.epochs, verbose=verbose, shuffle=False)  # (the dataset is shuffled)

    def predicted(x):
        return model.predict(x.astype(np.float32) / 255.0, batch_size=512, verbose=0).argmax(1)

    result = {
        "member": asdict(member),
        "train_images": len(x_train),
        "clean_accuracy": float(np.mean(predicted(x_test) == test_ids)),
        "triggers": {t: {"target": c, "attack_success_rate": float(np.mean(predicted(x_bad[t]) == c))}
                     for t, c in member.triggers.items()},
        "scaling": "1/255",
    }

    final = build_deepid(member.identities)
    final.set_weights(model.get_weights())
    stage = member.folder.with_name(member.folder.name + ".building")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    final.save(stage / "model.h5")
    write_official_h5(stage / "clean.h5", x_test, test_ids)
    for t, c in member.triggers.items():
        write_official_h5(stage / f"{t}.h5", x_bad[t], np.full(len(x_bad[t]), c))
    (stage / "facts.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(member.folder, ignore_errors=True)
    stage.rename(member.folder)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.demo.zoo [names]``: train the missing CSAW-scale networks."""
    return build_missing(argv, "python -m engine.demo.zoo", __doc__.splitlines()[0], MEMBERS,
                         lambda n: (MEMBERS[n].folder / "facts.json").exists(), lambda n: MEMBERS[n].folder,
                         lambda n: json.dumps(train(MEMBERS[n]), indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
