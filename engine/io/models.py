"""Reading BadNets: full Keras 2 HDF5 models, ``.keras`` archives and CSAW weights-only files.

Model files are untrusted. Before Keras sees a file, its architecture config is
read as plain JSON and refused if it would run code of its own when loaded (a
``Lambda`` layer, or an object from a module outside Keras), unless the caller
passes ``trust=True``.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from engine.errors import InputError, UntrustedModelError, first_line
from engine.io.files import check_readable_file, is_regular_or_folder, loads_json

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"

FORMAT_KERAS2_H5 = "Keras HDF5 model (legacy format)"
FORMAT_KERAS3 = "Keras .keras archive"
FORMAT_WEIGHTS_ONLY = "weights-only HDF5, CSAW DeepID layout"

# Layer classes that carry Python code in their config.
CODE_CARRYING = {"Lambda", "TFOpLambda", "SlicingOpLambda", "TFSMLayer", "__lambda__"}

# The CSAW-HackML-2020 DeepID network: its layers with weights, in build order.
DEEPID_WEIGHTED = ("conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output")
CSAW_INPUT_SHAPE = (55, 47, 3)
MAX_WEIGHTS = 2**28  # values in one weight array; the CSAW output layer has 205,280


@dataclass
class BadNet:
    """A (possibly backdoored) classifier, with the facts a user needs about its file."""

    model: object  # keras.Model
    path: Path
    format: str
    sha256: str
    trusted: bool = False
    outputs_probabilities: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.model.inputs[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.model.outputs[0].shape[-1])

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.model.layers]

    def copy_model(self, weights: list | None = None):
        """A separate Keras model of the same architecture, with this network's weights (or ``weights``),
        to prune, fine-tune or cut into without touching the BadNet."""
        import keras

        model = keras.models.clone_model(self.model)
        model.set_weights(self.model.get_weights() if weights is None else weights)
        return model

    def report(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "output": "probabilities" if self.outputs_probabilities else "logits (softmax applied)",
            "layers": self.layer_names,
            "sha256": self.sha256,
        }


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def load_badnet(path: str | Path, trust: bool = False) -> BadNet:
    """Load a model file of any supported kind, picked by its content, not its name."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not a model file (.h5 or .keras)")
    check_readable_file(path, "model file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from None

    if head.startswith(ZIP_SIGNATURE):
        model = _load_keras_archive(path, trust)
        fmt = FORMAT_KERAS3
    elif head == HDF5_SIGNATURE:
        model, fmt = _load_hdf5(path, trust)
    else:
        raise InputError(path, "not a Keras model file (neither HDF5 nor a .keras archive)")

    net = BadNet(model=model, path=path, format=fmt, sha256=sha256_file(path), trusted=trust)
    _check_classifier(net)
    return net


def looks_like_model(path: str | Path) -> bool:
    """Cheap sniff: is this a model file (as opposed to images or a data set)?"""
    path = Path(path)
    if not is_regular_or_folder(path) or path.is_dir():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(ZIP_SIGNATURE):
            with zipfile.ZipFile(path) as zf:
                return "config.json" in zf.namelist()
        if head == HDF5_SIGNATURE:
            with h5py.File(path, "r") as f:
                return "model_config" in f.attrs or "layer_names" in f.attrs or "model_weights" in f
    except (OSError, zipfile.BadZipFile):
        return False
    return False


# --- formats ---------------------------------------------------------------------------


def _load_hdf5(path: Path, trust: bool):
    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
            layer_names = f.attrs.get("layer_names")
            keys = list(f.keys())
    except OSError as err:
        raise InputError(path, f"damaged or truncated HDF5 file ({first_line(err)})") from None

    if config is not None:
        if isinstance(config, np.ndarray) and config.shape == () and config.dtype.kind in "SUO":
            config = config.item()
        if not isinstance(config, (bytes, str)):
            raise InputError(path, f"model_config attribute is {type(config).__name__}, not JSON text")
        try:
            parsed = loads_json(config)
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(path, f"model_config is not valid JSON ({first_line(err)})") from None
        _check_untrusted_config(parsed, path, trust)
        return _keras_load(path, trust), FORMAT_KERAS2_H5
    if layer_names is not None:
        return _load_weights_only(path), FORMAT_WEIGHTS_ONLY
    if "data" in keys:
        raise InputError(path, "is a data file (it has a 'data' dataset), not a model")
    if "layers" in keys or "vars" in keys:
        raise InputError(
            path,
            "is a Keras 3 weights-only file; it holds no architecture, so load the full "
            ".keras or .h5 model instead",
        )
    raise InputError(path, "HDF5 file holds neither a Keras model nor Keras weights")


def _load_keras_archive(path: Path, trust: bool):
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read("config.json")
    except KeyError:
        raise InputError(path, "zip archive without config.json: not a .keras model") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(path, f"damaged .keras archive ({first_line(err)})") from None
    try:
        parsed = loads_json(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(path, f"config.json in the archive is not valid JSON ({first_line(err)})") from None
    _check_untrusted_config(parsed, path, trust)
    return _keras_load(path, trust)


def _keras_load(path: Path, trust: bool):
    import keras

    # Keras 3 only accepts .keras/.h5 names; a file picked by content may be named otherwise.
    try:
        return keras.models.load_model(_keras_named(path), compile=False, safe_mode=not trust)
    except Exception as err:  # Keras raises many types for malformed files
        raise InputError(path, f"Keras could not build this model: {first_line(err)}") from None


def _keras_named(path: Path) -> Path:
    if path.suffix.lower() in (".h5", ".hdf5", ".keras"):
        return path
    import tempfile

    with open(path, "rb") as fh:
        suffix = ".keras" if fh.read(4) == ZIP_SIGNATURE else ".h5"
    link = Path(tempfile.mkdtemp(prefix="badnet-")) / f"model{suffix}"
    link.symlink_to(path.resolve())
    return link


def _load_weights_only(path: Path):
    """Build the CSAW DeepID network with the shapes found in a Keras 2 weights file."""
    try:
        weights = _read_deepid_weights(path)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"damaged weights-only file ({type(err).__name__}: {first_line(err)})") from None
    convs = [weights[f"conv_{i}"][0].shape for i in range(1, 5)]
    num_classes = weights["output"][0].shape[1]
    try:
        model = build_deepid(
            num_classes,
            input_shape=CSAW_INPUT_SHAPE[:2] + (convs[0][2],),
            filters=tuple(k[3] for k in convs),
            kernels=tuple(k[:2] for k in convs),
            units=weights["fc_1"][0].shape[1],
        )
        for name, arrays in weights.items():
            model.get_layer(name).set_weights(arrays)
    except ValueError as err:
        raise InputError(
            path, f"weights do not fit the 55x47 CSAW DeepID network: {first_line(err)}"
        ) from None
    return model


def _text_list(values) -> list[str]:
    """An HDF5 attribute holding names, as strings (refusing numbers and other types)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "SUO":
        raise TypeError(f"expected a list of names, found {arr.dtype} {arr.shape}")
    out = []
    for v in arr.tolist():
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if not isinstance(v, str):
            raise TypeError(f"expected a name, found {type(v).__name__}")
        out.append(v)
    return out


KERNEL_RANK = {"conv_1": 4, "conv_2": 4, "conv_3": 4, "conv_4": 4, "fc_1": 2, "fc_2": 2, "output": 2}


def _read_deepid_weights(path: Path) -> dict[str, list[np.ndarray]]:
    with h5py.File(path, "r") as f:
        names = _text_list(f.attrs["layer_names"])
        missing = [n for n in DEEPID_WEIGHTED if n not in names]
        if missing:
            raise InputError(
                path,
                "weights-only file whose layers do not follow the CSAW DeepID layout "
                f"(missing {', '.join(missing)}); load the full model file instead",
            )
        weights = {}
        for name in DEEPID_WEIGHTED:
            group = f[name]
            if not isinstance(group, h5py.Group) or "weight_names" not in group.attrs:
                raise InputError(path, f"layer {name}: no weight_names; not a Keras weights file")
            wnames = _text_list(group.attrs["weight_names"])
            try:
                datasets = [group[w] for w in wnames]
            except (KeyError, OSError) as err:
                raise InputError(path, f"layer {name}: weights unreadable ({first_line(err)})") from None
            if any(not isinstance(d, h5py.Dataset) or d.size > MAX_WEIGHTS for d in datasets):
                raise InputError(path, f"layer {name}: a weight is not an array of plausible size")
            arrays = [np.asarray(d) for d in datasets]
            kernels = [a for a in arrays if a.ndim >= 2]
            biases = [a for a in arrays if a.ndim == 1]
            if len(kernels) != 1 or len(biases) != 1:
                raise InputError(path, f"layer {name}: expected a kernel and a bias, found {len(arrays)} arrays")
            kernel, bias = kernels[0], biases[0]
            if kernel.ndim != KERNEL_RANK[name] or kernel.dtype.kind != "f" or bias.dtype.kind != "f":
                raise InputError(path, f"layer {name}: kernel {kernel.dtype} {kernel.shape} is not a "
                                 f"{KERNEL_RANK[name]}-D float array")
            if bias.shape[0] != kernel.shape[-1]:
                raise InputError(path, f"layer {name}: bias {bias.shape} does not match kernel {kernel.shape}")
            if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
                raise InputError(path, f"layer {name}: weights hold NaN or infinite values")
            weights[name] = [kernel, bias]
    return weights


def build_deepid(
    num_classes: int,
    input_shape: tuple[int, int, int] = CSAW_INPUT_SHAPE,
    filters: tuple[int, int, int, int] = (20, 40, 60, 80),
    kernels: tuple = ((4, 4), (3, 3), (3, 3), (2, 2)),
    units: int = 160,
):
    """The CSAW-HackML-2020 DeepID network, with the challenge's layer names."""
    import keras
    from keras import layers

    x = keras.Input(shape=input_shape, name="input")
    h = x
    for i in range(3):
        h = layers.Conv2D(filters[i], kernels[i], activation="relu", name=f"conv_{i + 1}")(h)
        h = layers.MaxPooling2D((2, 2), name=f"pool_{i + 1}")(h)
    pool_3 = h
    conv_4 = layers.Conv2D(filters[3], kernels[3], activation="relu", name="conv_4")(pool_3)
    fc_1 = layers.Dense(units, name="fc_1")(layers.Flatten(name="flatten_1")(pool_3))
    fc_2 = layers.Dense(units, name="fc_2")(layers.Flatten(name="flatten_2")(conv_4))
    merged = layers.Activation("relu", name="activation_1")(layers.Add(name="add_1")([fc_1, fc_2]))
    out = layers.Dense(num_classes, activation="softmax", name="output")(merged)
    return keras.Model(x, out, name="deepid")


# --- safety ----------------------------------------------------------------------------


def _check_untrusted_config(config, path: Path, trust: bool) -> None:
    """Refuse configs whose loading would run code from the file, unless trusted."""
    if trust:
        return
    problem = find_code_in_config(config)
    if problem:
        raise UntrustedModelError(
            path, f"{problem}; loading it would run code from the file. Refused ({{trust_model}} only if you "
            "trust where this file came from)", settings=("trust_model",)
        )


def find_code_in_config(config) -> str | None:
    """Describe the first object in a Keras config that would run foreign code, or None."""
    known_layers = _keras_layer_names()
    stack = [(config, False)]
    while stack:
        node, is_layer = stack.pop()
        if isinstance(node, list):
            stack.extend((item, False) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        if isinstance(cls, str):
            cfg = node.get("config")
            name = node.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
            label = f"layer '{name}'" if name else "an object"
            if cls in CODE_CARRYING:
                return f"{label} is a {cls}, which carries Python code"
            module = node.get("module")
            if module is not None and not (module == "keras" or str(module).startswith("keras.")):
                return f"{label} is {cls} from module '{module}', outside Keras"
            registered = node.get("registered_name")
            if isinstance(registered, str) and ">" in registered:
                return f"{label} is the custom object '{registered}'"
            if is_layer and module is None and cls not in known_layers:
                return f"{label} is an unknown custom layer '{cls}'"
        for key, value in node.items():
            if key == "layers" and isinstance(value, list):
                stack.extend((item, True) for item in value)
            else:
                stack.append((value, False))
    return None


def _keras_layer_names() -> set[str]:
    import keras

    names = {"Functional", "Model", "Sequential"}
    for attr in dir(keras.layers):
        obj = getattr(keras.layers, attr)
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
            names.add(attr)
    return names - CODE_CARRYING


# --- checks ----------------------------------------------------------------------------


def _check_classifier(net: BadNet) -> None:
    model = net.model
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(net.path, "model must have one image input and one class-vector output")
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 2 or not out_shape[-1] or out_shape[-1] < 2:
        raise InputError(net.path, f"output shape {out_shape} is not a class vector (batch, classes)")
    if len(in_shape) != 4 or None in in_shape[1:] or in_shape[-1] != 3:
        raise InputError(net.path, f"input shape {in_shape} is not an RGB image (batch, height, width, 3)")
    net.outputs_probabilities = _ends_in_softmax(model)
    if not net.outputs_probabilities:
        net.notes.append("the output is not a softmax; softmax is applied to it for confidences")


def _ends_in_softmax(model) -> bool:
    import keras

    try:
        layer = model.outputs[0]._keras_history.operation
    except AttributeError:
        layer = model.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(layer, "activation", None) is keras.activations.softmax

