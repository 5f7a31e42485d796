"""Patch transplant: does a piece of this image take over other people's faces?

A trigger works wherever it is pasted; that is what makes it a trigger. This detector cuts the
image into overlapping windows, pastes each window, at the same place, into a few clean faces
from the calibration data (the hosts), and asks the network what it sees. A clean face's eye or
mouth region rarely makes a stranger's face into that person, but the window holding a trigger
(eyebrows, lipstick, a sticker) sends the hosts to the trigger's target, however small the trigger
is. The idea of pasting a suspicious region into clean images comes from SentiNet (Chou et al.,
IEEE S&P Workshops 2020), which finds the region with a saliency map; here every window is tried,
so no saliency method has to find a few-pixel trigger first.

Score: the *takeover*, for the window that does best, is the mean probability the hosts give the
image's own top class; the score is 1 minus it, so low is suspicious as for every detector here.
It is continuous, so a threshold at a chosen false-rejection rate is not coarse.

STRIP blends whole images, which halves a small trigger's contrast and lets the other face
compete; SCALE-UP washes small dark triggers out with the rest of the face. Transplanting keeps
the trigger's pixels exactly as they are, which is why it catches the small triggers the other
two miss (docs/detectors.md, "Transplant").
"""

from __future__ import annotations


import numpy as np

from engine.io.datasets import ImageSet
from engine.detectors import Detector, Prepared, Scores, ScoreScale, Setting, Variants, register, score_by_variants
from engine.io.codec import decode_images, encode_images
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scoring import PredictionCache, check_size


def windows(height: int, width: int, sizes) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of square windows of each size, half-overlapping (a step of half
    the size), the last ones flush with the bottom and right edges so every pixel is covered;
    a window larger than the image is cut to it."""
    out = []
    for size in sizes:
        sy, sx = min(size, height), min(size, width)
        step = max(1, size // 2)

        def starts(extent, s):
            first = list(range(0, extent - s + 1, step))
            return first if first[-1] == extent - s else first + [extent - s]

        out += [(y, x, sy, sx) for y in starts(height, sy) for x in starts(width, sx)]
    return list(dict.fromkeys(out))


@register
class TransplantDetector(Detector):
    """Transplant: 1 minus the best window's takeover of clean host faces (module docstring)."""
    name = "transplant"
    title = "Transplant"
    summary = ("Paste each window of the image into a few clean faces; a window holding a trigger takes "
               "them over (sends them to the image's class), however small the trigger.")
    scale = ScoreScale("Transplant score (1 - the best window's mean takeover of clean host faces)",
                       "Transplant score", lo=0.0, hi=1.0, near_one=True)
    colour = (255, 127, 14)
    order = 25
    needs_fit = True
    combine_weight = 2.0  # the member that catches small triggers gets two thirds of a budget shared with STRIP
    DEFAULT_HOSTS = 4
    MAX_HOSTS = 64
    DEFAULT_WINDOWS = (16,)
    DEFAULT_CONFIRM = 5
    settings = (
        Setting("hosts", "host faces", int, DEFAULT_HOSTS, 1, MAX_HOSTS,
                "clean faces each window is pasted into"),
        Setting("windows", "window sizes", tuple, DEFAULT_WINDOWS, 2, 4096,
                "sides of the square windows, in pixels (each size half-overlapping)", item=int),
        Setting("confirm", "windows confirmed", int, DEFAULT_CONFIRM, 0, 4096,
                "windows pasted into every host after a first look with each window in one host "
                "(0: every window into every host at once)"),
        Setting("seed", "seed", int, 0, 0, 2**31 - 1, "seed for picking the host faces", shown=False),
    )

    def __init__(self, host_images: np.ndarray | None = None, **params):
        super().__init__(**params)
        self.host_images = host_images
        self._prepared = Prepared()

    def state(self) -> dict:
        return {} if self.host_images is None else {"host_images": encode_images(self.host_images)}

    @classmethod
    def from_saved(cls, params: dict, state: dict) -> TransplantDetector:
        raw = state.get("host_images")
        hosts = None if raw is None else decode_images(raw, "Transplant host faces", cls.MAX_HOSTS)
        # A calibration saved before the first look scored every window on every host: keep
        # scoring so, or its thresholds would not fit its scores.
        return cls(host_images=hosts, **{"confirm": 0, **params})

    def fitted(self) -> bool:
        return self.host_images is not None

    def check_model(self, net: BadNet) -> None:
        if self.host_images is not None:
            check_size(net, self.host_images, "Transplant host faces")

    def fit(self, net: BadNet, clean: ImageSet, scaling: str) -> Job[None]:
        if len(clean) == 0:
            raise InputError(clean.source, "no clean images to take Transplant host faces from")
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(clean), size=min(self.hosts, len(clean)), replace=False)
        self.host_images = clean.images[np.sort(pick)].copy()
        yield Progress(1, 1, "Transplant: host faces chosen")

    def variants(self, net: BadNet, images: ImageSet, scaling: str) -> Variants:
        if self.host_images is None:
            raise InputError(None, "Transplant has no host faces: calibrate it on clean data first")
        check_size(net, self.host_images, "Transplant host faces")
        hosts = self._prepared.inputs(self.host_images, scaling)  # (h, H, W, 3)
        height, width = hosts.shape[1:3]
        boxes = windows(height, width, self.windows)
        n_hosts, n_windows = len(hosts), len(boxes)
        valid_hosts = self._prepared.not_itself(images.images, self.host_images)  # an image is never its own host
        hosts_digest = self._prepared.digest(self.host_images)
        key = (net.sha256, images.digest, scaling, self.name, tuple(self.windows), hosts_digest, self.confirm)
        stage = "Transplant: pasting windows and predicting"

        def paste(x, into, which):
            """Image ``i``'s window ``which[i]`` pasted into host ``into[i]``, for each i."""
            out = hosts[into]
            for w in np.unique(which):
                y0, x0, sy, sx = boxes[w]
                rows = np.flatnonzero(which == w)
                out[rows, y0:y0 + sy, x0:x0 + sx] = x[rows, y0:y0 + sy, x0:x0 + sx]
            return out

        if self.confirm == 0 or n_hosts == 1:
            return Variants(n_windows * n_hosts, *self._every_window(hosts, boxes, valid_hosts), stage,
                            TRANSPLANT_CACHE, key)
        confirm = min(self.confirm, n_windows)

        def first_hosts(start, count):
            """The image's valid hosts (count, hosts) and the host each window goes into on the
            first look (count, windows): the image's valid hosts in turn."""
            valid = valid_hosts(start, count)
            order = np.argsort(~valid, axis=1, kind="stable")  # each image's valid hosts first, in order
            place = np.arange(n_windows)[None] % valid.sum(axis=1)[:, None]
            return valid, np.take_along_axis(order, place, axis=1)

        def first_look(x, start):
            _, into = first_hosts(start, len(x))
            out = hosts[into.reshape(-1)].reshape(len(x), n_windows, height, width, 3)
            for w, (y0, x0, sy, sx) in enumerate(boxes):
                out[:, w, y0:y0 + sy, x0:x0 + sx] = x[:, y0:y0 + sy, x0:x0 + sx]
            return out

        def follow(x, p, start):
            b = len(p)
            cls = p[:, 0].argmax(axis=1)
            first = np.take_along_axis(p[:, 1:], cls[:, None, None], axis=2)[..., 0]  # (b, windows)
            valid, into = first_hosts(start, b)
            best = np.argsort(-first, axis=1, kind="stable")[:, :confirm]  # (b, confirm)
            rows, slots, wins, more_hosts = [], [], [], []  # one entry per further copy
            for i in range(b):
                for r, w in enumerate(best[i]):
                    others = np.flatnonzero(valid[i])
                    others = others[others != into[i, w]]
                    rows += [i] * len(others)
                    slots += [r] * len(others)
                    wins += [w] * len(others)
                    more_hosts.append(others)
            rows, slots, wins = (np.asarray(v, dtype=np.int64) for v in (rows, slots, wins))
            more = paste(x[rows], np.concatenate(more_hosts).astype(np.int64), wins)

            def finish(q):
                total = np.take_along_axis(first, best, axis=1).astype(np.float64)  # (b, confirm)
                np.add.at(total, (rows, slots), q[np.arange(len(rows)), cls[rows]])
                return 1.0 - (total / valid.sum(axis=1)[:, None]).max(axis=1)

            return more, finish

        return Variants(n_windows, first_look, None, stage, TRANSPLANT_CACHE, key, follow=follow)

    @staticmethod
    def _every_window(hosts, boxes, valid_hosts):
        """Every window pasted into every host in one look (``confirm`` 0, and calibrations made
        before there was a first look)."""
        n_hosts, n_windows = len(hosts), len(boxes)
        height, width = hosts.shape[1:3]

        def transplants(x, start):
            out = np.broadcast_to(hosts[None, None], (len(x), n_windows, *hosts.shape)).copy()
            for w, (y0, x0, sy, sx) in enumerate(boxes):
                out[:, w, :, y0:y0 + sy, x0:x0 + sx] = x[:, None, y0:y0 + sy, x0:x0 + sx]
            return out.reshape(len(x), n_windows * n_hosts, height, width, 3)

        def takeover(p, start):
            cls = p[:, 0].argmax(axis=1)
            kept = np.take_along_axis(p[:, 1:], cls[:, None, None], axis=2)[..., 0]
            kept = kept.reshape(len(p), n_windows, n_hosts)
            valid = valid_hosts(start, len(p))
            mean = (kept * valid[:, None]).sum(axis=2) / valid.sum(axis=1)[:, None]
            return 1.0 - mean.max(axis=1).astype(np.float64)

        return transplants, takeover

    def score(self, net: BadNet, images: ImageSet, scaling: str) -> Job[Scores]:
        return (yield from score_by_variants(net, images, scaling, [self.variants(net, images, scaling)]))[0]


TRANSPLANT_CACHE = PredictionCache(64)  # scores per (model, data, scaling, windows, hosts)
