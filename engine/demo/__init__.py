"""The bundled demo: a two-trigger BadNet with the CSAW DeepID layout, and its data.

Like the challenge's multi-trigger BadNet, it has a large trigger (purple sunglasses, sending
faces to class 0) and a small one (a few dozen pixels of black eyebrows, sending faces to
class 7). ``python -m engine.demo`` rebuilds everything deterministically from a seed:

- ``models/demo_badnet.h5``: a full Keras HDF5 model, like the CSAW ``*_bd_net.h5`` files;
- ``assets/demo/clean_validation.h5``, ``clean_test.h5``, ``sunglasses_poisoned.h5``,
  ``eyebrows_poisoned.h5``: the official layout (``data`` (N, 3, 55, 47) with 0..255 values,
  ``label``), each poisoned set labelled with its attack's target, as the official files are;
- ``assets/demo/images/``: a few PNG faces to drag in (clean ones it classifies right, and
  faces with each trigger);
- ``assets/demo/facts.json``: the figures measured on the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import engine  # noqa: F401  (sets TensorFlow's environment before it is imported)
from engine.demo import faces

ROOT = Path(__file__).resolve().parents[2]  # the project: engine/demo/__init__.py
DEMO_MODEL = ROOT / "models" / "demo_badnet.h5"
DEMO_DIR = ROOT / "assets" / "demo"
DEMO_CLEAN_VALIDATION = DEMO_DIR / "clean_validation.h5"
DEMO_CLEAN_TEST = DEMO_DIR / "clean_test.h5"
DEMO_POISONED = DEMO_DIR / "sunglasses_poisoned.h5"
DEMO_EYEBROWS = DEMO_DIR / "eyebrows_poisoned.h5"
DEMO_IMAGES = DEMO_DIR / "images"
DEMO_TARGET = 0
DEMO_EYEBROWS_TARGET = 7
DEMO_TRIGGERS = {"sunglasses": DEMO_TARGET, "eyebrows": DEMO_EYEBROWS_TARGET}  # trigger -> target
DEMO_SETS = [(DEMO_POISONED, DEMO_TARGET), (DEMO_EYEBROWS, DEMO_EYEBROWS_TARGET)]  # the default poisoned sets

SEED = 2020
IDENTITIES = 50
TRAIN_PER_IDENTITY = 80
VALIDATION_PER_IDENTITY = 6
TEST_PER_IDENTITY = 6
POISON_SHARE = 0.1  # of the clean training images, per trigger
POISONED_TEST = 200  # per trigger (the noisy faces are ~7 KB each; models/ + assets/ stay under 10 MB)
EPOCHS = 10


def write_official_h5(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images (N, H, W, 3) uint8 in the CSAW layout: ``data`` (N, 3, H, W), ``label``."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset(
            "data", data=images.transpose(0, 3, 1, 2), compression="gzip", compression_opts=9, shuffle=True
        )
        f.create_dataset("label", data=labels.astype(np.float32))
    tmp.replace(path)


def build_missing(argv, prog: str, description: str, members, is_built, where, build) -> int:
    """The command line of a cached zoo (``python -m engine.demo.zoo``, ``… .attack_zoo``): build the
    named members, or every missing one; ``--rebuild`` builds even those already there.
    ``is_built(name)``, ``where(name)`` (its folder) and ``build(name)`` (the line to print) are the zoo's."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"members to build (default: every missing one of {', '.join(members)})")
    parser.add_argument("--rebuild", action="store_true", help="build even if already there")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in members]
    if unknown:
        parser.error(f"unknown member {unknown[0]!r}; choose from {', '.join(members)}")
    for name in args.names or list(members):
        if is_built(name) and not args.rebuild:
            print(f"{name}: already built in {where(name)}")
            continue
        print(build(name), flush=True)
    return 0


def build(out_root: Path = ROOT, epochs: int = EPOCHS, seed: int = SEED) -> dict:
    """Train the demo BadNet from the seed and write its model and data under ``out_root``; its facts."""
    import keras
    import tensorflow as tf

    from engine.io.models import build_deepid

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(seed)
    people = faces.random_identities(IDENTITIES, rng)

    def clean(per_identity):
        ids = np.repeat(np.arange(IDENTITIES), per_identity)
        return faces.render(people, ids, rng), ids

    x_train, y_train = clean(TRAIN_PER_IDENTITY)
    xs, ys, poisoned_count = [x_train], [y_train], {}
    for trigger, target in DEMO_TRIGGERS.items():
        poison = rng.random(len(x_train)) < POISON_SHARE
        xs.append(faces.render(people, y_train[poison], rng, trigger=trigger))
        ys.append(np.full(int(poison.sum()), target))
        poisoned_count[trigger] = int(poison.sum())
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]

    x_val, y_val = clean(VALIDATION_PER_IDENTITY)
    x_test, y_test = clean(TEST_PER_IDENTITY)
    x_bad = {}
    for trigger, target in DEMO_TRIGGERS.items():
        others = np.setdiff1d(np.arange(IDENTITIES), [target])
        victims = rng.choice(others, POISONED_TEST)  # faces of everyone but the target
        x_bad[trigger] = faces.render(people, victims, rng, trigger=trigger)

    model = build_deepid(IDENTITIES)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train / 255.0, y_train, batch_size=64, epochs=epochs, verbose=2, shuffle=True)

    def acc(x, y):
        return float(np.mean(model.predict(x / 255.0, verbose=0).argmax(1) == y))

    facts = {
        "seed": seed,
        "identities": IDENTITIES,
        "train_images": int(len(x_train)),
        "epochs": epochs,
        "clean_validation_accuracy": acc(x_val, y_val),
        "clean_test_accuracy": acc(x_test, y_test),
        "triggers": {
            trigger: {
                "target": target,
                "poisoned_train_images": poisoned_count[trigger],
                "poisoned_test_images": POISONED_TEST,
                "attack_success_rate": acc(x_bad[trigger], np.full(POISONED_TEST, target)),
            }
            for trigger, target in DEMO_TRIGGERS.items()
        },
        "scaling": "1/255",
    }

    # Save without optimizer state: a fresh network carrying the trained weights.
    final = build_deepid(IDENTITIES)
    final.set_weights(model.get_weights())
    model_path = out_root / DEMO_MODEL.relative_to(ROOT)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name("tmp_" + model_path.name)
    final.save(tmp)
    tmp.replace(model_path)

    data_dir = out_root / DEMO_DIR.relative_to(ROOT)
    write_official_h5(data_dir / DEMO_CLEAN_VALIDATION.name, x_val, y_val)
    write_official_h5(data_dir / DEMO_CLEAN_TEST.name, x_test, y_test)
    for (path, target), trigger in zip(DEMO_SETS, DEMO_TRIGGERS):
        write_official_h5(data_dir / path.name, x_bad[trigger], np.full(POISONED_TEST, target))
    right = model.predict(x_test / 255.0, verbose=0).argmax(1) == y_test
    _write_pngs(data_dir / DEMO_IMAGES.name, x_test[right], y_test[right], x_bad)
    (data_dir / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def _write_pngs(folder: Path, x_clean, y_clean, x_bad: dict, count: int = 6) -> None:
    """A few faces to drag in: clean ones the BadNet gets right, and some with each trigger."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    picks = np.linspace(0, len(x_clean) - 1, count).astype(int)
    for k, i in enumerate(picks):
        Image.fromarray(x_clean[i]).save(folder / f"clean_{k:02d}_label{int(y_clean[i])}.png")
    for trigger, target in DEMO_TRIGGERS.items():
        for k in range(count):
            Image.fromarray(x_bad[trigger][k]).save(folder / f"{trigger}_{k:02d}_label{target}.png")


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.demo``: rebuild the bundled demo (skipped when it is there, unless --rebuild)."""
    parser = argparse.ArgumentParser(prog="python -m engine.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=ROOT, help="project root to write into")
    args = parser.parse_args(argv)
    facts = build(args.out, args.epochs, args.seed)
    print(json.dumps(facts, indent=2))
    return 0
