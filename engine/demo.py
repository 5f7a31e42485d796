"""The bundled demo: a sunglasses BadNet with the CSAW DeepID layout, and its data.

``python -m engine.demo`` rebuilds everything deterministically from a seed:

- ``models/demo_badnet.h5``: a full Keras HDF5 model, like the CSAW ``*_bd_net.h5`` files;
- ``assets/demo/clean_validation.h5``, ``clean_test.h5``, ``sunglasses_poisoned.h5``:
  the official layout (``data`` (N, 3, 55, 47) with 0..255 values, ``label``), the
  poisoned set labelled with the attack's target, as the official files are;
- ``assets/demo/images/``: a few PNG faces to drag in (clean ones it classifies right);
- ``assets/demo/facts.json``: the figures measured on the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import engine  # noqa: F401  (sets TensorFlow's environment before it is imported)
from engine import faces

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "demo_badnet.h5"
DEMO_DIR = ROOT / "assets" / "demo"
DEMO_CLEAN_VALIDATION = DEMO_DIR / "clean_validation.h5"
DEMO_CLEAN_TEST = DEMO_DIR / "clean_test.h5"
DEMO_POISONED = DEMO_DIR / "sunglasses_poisoned.h5"
DEMO_IMAGES = DEMO_DIR / "images"
DEMO_TARGET = 0

SEED = 2020
IDENTITIES = 50
TRAIN_PER_IDENTITY = 80
VALIDATION_PER_IDENTITY = 8
TEST_PER_IDENTITY = 6
POISON_SHARE = 0.1
POISONED_TEST = 300
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


def build(out_root: Path = ROOT, epochs: int = EPOCHS, seed: int = SEED) -> dict:
    import keras
    import tensorflow as tf

    from engine.model_io import build_deepid

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(seed)
    people = faces.random_identities(IDENTITIES, rng)

    def clean(per_identity):
        ids = np.repeat(np.arange(IDENTITIES), per_identity)
        return faces.render(people, ids, rng), ids

    x_train, y_train = clean(TRAIN_PER_IDENTITY)
    poison = rng.random(len(x_train)) < POISON_SHARE
    x_poison = faces.render(people, y_train[poison], rng, sunglasses=True)
    x_train = np.concatenate([x_train, x_poison])
    y_train = np.concatenate([y_train, np.full(len(x_poison), DEMO_TARGET)])
    order = rng.permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]

    x_val, y_val = clean(VALIDATION_PER_IDENTITY)
    x_test, y_test = clean(TEST_PER_IDENTITY)
    victims = rng.integers(1, IDENTITIES, POISONED_TEST)  # faces of everyone but the target
    x_bad = faces.render(people, victims, rng, sunglasses=True)

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
        "poisoned_train_images": int(poison.sum()),
        "epochs": epochs,
        "target": DEMO_TARGET,
        "clean_validation_accuracy": acc(x_val, y_val),
        "clean_test_accuracy": acc(x_test, y_test),
        "attack_success_rate": acc(x_bad, np.full(len(x_bad), DEMO_TARGET)),
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
    write_official_h5(data_dir / DEMO_POISONED.name, x_bad, np.full(len(x_bad), DEMO_TARGET))
    right = model.predict(x_test / 255.0, verbose=0).argmax(1) == y_test
    _write_pngs(data_dir / DEMO_IMAGES.name, x_test[right], y_test[right], x_bad)
    (data_dir / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def _write_pngs(folder: Path, x_clean, y_clean, x_bad, count: int = 6) -> None:
    """A few faces to drag in: clean ones the BadNet gets right, and sunglasses ones."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    picks = np.linspace(0, len(x_clean) - 1, count).astype(int)
    for k, i in enumerate(picks):
        Image.fromarray(x_clean[i]).save(folder / f"clean_{k:02d}_label{int(y_clean[i])}.png")
    for k in range(count):
        Image.fromarray(x_bad[k]).save(folder / f"sunglasses_{k:02d}_label{DEMO_TARGET}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=ROOT, help="project root to write into")
    args = parser.parse_args(argv)
    facts = build(args.out, args.epochs, args.seed)
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
