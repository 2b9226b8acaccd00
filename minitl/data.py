"""Datasets for transfer learning, and a DataLoader.

The default dataset is generated, not downloaded: 16x16 grayscale glyphs drawn
from straight strokes (a ring is a 12-sided polygon), each image with its own
position, scale, rotation, stroke width and pixel noise. The source classes and
the target classes are different glyphs built from the same kinds of strokes, so
the stroke detectors a network learns on the source are useful on the target.
Real data, bundled with a package (no download): scikit-learn's handwritten digits, and
scikit-image's photos and textures (the source) with faces and non-faces (the target).
"""

import hashlib
import math
from dataclasses import dataclass

from minitl import backend
from minitl.checks import is_int, positive_int
from minitl.functional.loss import checked_labels
from minitl.tensors import Tensor

np = backend.numpy_host  # data is made and kept on the host; batches move to the device


# ---------------------------------------------------------------- glyphs as strokes

def _polygon(cx, cy, r, sides=12, start=0.0, stop=2 * math.pi):
    """Segments along a circle (or an arc from start to stop), as ((x0, y0), (x1, y1)) pairs."""
    angles = [start + (stop - start) * i / sides for i in range(sides + 1)]
    points = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    return list(zip(points[:-1], points[1:]))


# Each glyph is a list of segments in a [-1, 1] box, y pointing down.
GLYPHS = {
    "cross": [((-0.8, 0), (0.8, 0)), ((0, -0.8), (0, 0.8))],
    "ring": _polygon(0, 0, 0.7),
    "triangle": [((0, -0.75), (0.75, 0.65)), ((0.75, 0.65), (-0.75, 0.65)), ((-0.75, 0.65), (0, -0.75))],
    "tee": [((-0.75, -0.7), (0.75, -0.7)), ((0, -0.7), (0, 0.8))],
    "square": [((-0.65, -0.65), (0.65, -0.65)), ((0.65, -0.65), (0.65, 0.65)),
               ((0.65, 0.65), (-0.65, 0.65)), ((-0.65, 0.65), (-0.65, -0.65))],
    "ell": [((-0.5, -0.8), (-0.5, 0.7)), ((-0.5, 0.7), (0.6, 0.7))],
    "ex": [((-0.7, -0.7), (0.7, 0.7)), ((-0.7, 0.7), (0.7, -0.7))],
    "arc": _polygon(0.15, 0, 0.7, sides=8, start=0.5 * math.pi, stop=1.5 * math.pi),
    "parallel": [((-0.75, -0.35), (0.75, -0.35)), ((-0.75, 0.35), (0.75, 0.35))],
    "eight": _polygon(0, -0.4, 0.38, sides=10) + _polygon(0, 0.4, 0.38, sides=10),
}
SOURCE_GLYPHS = ("cross", "ring", "triangle", "tee", "square")
TARGET_GLYPHS = ("ell", "ex", "arc", "parallel", "eight")

IMAGE_SIZE = 16


def render(points, widths, size=IMAGE_SIZE):
    """Draw n images of k segments each: points (n, k, 2, 2) are segment ends in [-1, 1]
    coordinates, widths (n, k) stroke widths; returns (n, size, size) images.

    Each pixel's brightness falls off with its distance to the nearest segment;
    the edge is one pixel wide, so strokes are anti-aliased.
    """
    centers = (np.arange(size) + 0.5) / size * 2 - 1
    py, px = np.meshgrid(centers, centers, indexing="ij")          # (size, size)
    pixel = 2.0 / size
    images = np.zeros((points.shape[0], size, size))
    for j in range(points.shape[1]):
        a, b = points[:, j, 0], points[:, j, 1]                     # (n, 2) each
        ab = b - a
        length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)[:, None, None]
        t = ((px - a[:, 0, None, None]) * ab[:, 0, None, None] + (py - a[:, 1, None, None]) * ab[:, 1, None, None])
        t = np.clip(t / length2, 0, 1)
        dx = px - (a[:, 0, None, None] + t * ab[:, 0, None, None])
        dy = py - (a[:, 1, None, None] + t * ab[:, 1, None, None])
        distance = np.sqrt(dx ** 2 + dy ** 2)
        ink = np.clip((widths[:, j, None, None] / 2 - distance) / pixel + 0.5, 0, 1)
        np.maximum(images, ink, out=images)
    return images


def _random_glyphs(names, labels, rng, hard):
    """Segments of the glyphs `names[labels]`, each moved, scaled, rotated, with a random stroke width."""
    n = len(labels)
    k = max(len(GLYPHS[g]) for g in names) + (2 if hard else 0)
    far = 10.0  # unused segment slots sit far outside the image: they draw nothing
    points = np.full((n, k, 2, 2), far)
    for c, name in enumerate(names):
        segs = np.array(GLYPHS[name], dtype=float)                  # (m, 2, 2)
        points[labels == c, :len(segs)] = segs
    angle = rng.uniform(-1, 1, n) * (0.6 if hard else 0.5)          # radians
    scale = rng.uniform(0.5, 1.0, n)
    shift = rng.uniform(-0.35, 0.35, (n, 2))
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    x, y = points[..., 0], points[..., 1]
    used = points[..., 0] < far / 2
    moved = np.stack([(cos * x - sin * y), (sin * x + cos * y)], axis=-1) * scale[:, None, None, None]
    moved += shift[:, None, None, :]
    points = np.where(used[..., None], moved, far)
    if hard:  # two short distractor strokes anywhere in the image
        start = rng.uniform(-0.9, 0.9, (n, 2, 2))
        direction = rng.uniform(-0.5, 0.5, (n, 2, 2))
        points[:, -2:, 0], points[:, -2:, 1] = start, start + direction
    widths = rng.uniform(0.16, 0.3, (n, 1)) * np.ones((1, k))
    return points, widths


def generate_glyphs(names, per_class, rng, hard=False):
    """(x float32 (n, 1, 16, 16) in [0, 1], y int64 (n,)), classes balanced and shuffled."""
    labels = rng.permutation(np.repeat(np.arange(len(names)), per_class))
    images = render(*_random_glyphs(names, labels, rng, hard))
    images += rng.normal(0, 0.3 if hard else 0.15, images.shape)
    x = np.clip(images, 0, 1).astype(np.float32)[:, None]
    return x, labels.astype(np.int64)


# ---------------------------------------------------------------- datasets

@dataclass(frozen=True)
class Split:
    """Images x (n, c, h, w) float32 and labels y (n,) int64, on the host."""
    x: object
    y: object

    def __post_init__(self):
        shapes = [getattr(a, "shape", None) for a in (self.x, self.y)]
        if None in shapes or len(shapes[0]) < 1:
            raise TypeError(f"Split: x and y must be arrays, x with a batch axis; got "
                            f"{type(self.x).__name__} and {type(self.y).__name__}")
        if len(shapes[1]) != 1:
            raise ValueError(f"Split: y must be 1-D labels, got shape {shapes[1]}")
        if shapes[0][0] != shapes[1][0]:  # k_shot would pair images with other images' labels
            raise ValueError(f"Split: x has {shapes[0][0]} examples but y has {shapes[1][0]}")

    def __len__(self):
        return len(self.y)

    def fingerprint(self):
        """A short hash of the images and labels: identifies this data in caches."""
        h = hashlib.sha256()
        for a in (self.x, self.y):
            h.update(str((a.shape, a.dtype)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class TransferData:
    """A source task and a target task with disjoint classes."""
    name: str
    source_train: Split
    source_test: Split
    target_pool: Split     # labelled target examples; k-shot training sets are drawn from it
    target_test: Split     # held out: only ever used to report accuracy
    source_classes: tuple
    target_classes: tuple

    @property
    def image_shape(self):
        return tuple(self.source_train.x.shape[1:])


def glyphs(hard=False, seed=0, source_per_class=1000, source_test_per_class=200,
           target_pool_per_class=200, target_test_per_class=300):
    """The embedded default: 5 source glyphs, 5 different target glyphs, deterministic from `seed`."""
    rng = np.random.default_rng(seed)
    make = lambda names, n: Split(*generate_glyphs(names, n, rng, hard))
    return TransferData(
        name="glyphs-hard" if hard else "glyphs",
        source_train=make(SOURCE_GLYPHS, source_per_class), source_test=make(SOURCE_GLYPHS, source_test_per_class),
        target_pool=make(TARGET_GLYPHS, target_pool_per_class), target_test=make(TARGET_GLYPHS, target_test_per_class),
        source_classes=SOURCE_GLYPHS, target_classes=TARGET_GLYPHS)


def digits(seed=0):
    """scikit-learn's 1797 handwritten 8x8 digits: source 0-4, target 5-9 (relabelled 0-4).

    Source: 80% train / 20% test. Target: half of each class is the labelled pool,
    the other half the test set.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: pip install 'minitl[lessons]'") from None
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    parts = {"source_train": [], "source_test": [], "target_pool": [], "target_test": []}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        if digit < 5:
            cut = int(0.8 * len(idx))
            parts["source_train"].append(idx[:cut]), parts["source_test"].append(idx[cut:])
        else:
            cut = len(idx) // 2
            parts["target_pool"].append(idx[:cut]), parts["target_test"].append(idx[cut:])
    splits = {}
    for name, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        splits[name] = Split(x[idx], y[idx] % 5)
    return TransferData(name="digits", source_classes=tuple("01234"), target_classes=tuple("56789"), **splits)


# Grayscale photos, textures and a micrograph that scikit-image ships in its wheel: each is a source class.
PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "text", "page", "clock", "cell")
PHOTO_SIZE = 24  # a multiple of 4 (TransferCNN pools twice): the 25x25 faces lose their last row and column


def _unit(image):
    """Pixels in [0, 1], as the other datasets have them (scikit-image gives uint8 or floats in [0, 1])."""
    return image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


def _patches(image, n, rng, size=PHOTO_SIZE):
    """n different size x size patches from random places of a 2-D image: (n, 1, size, size)."""
    h, w = image.shape[0] - size + 1, image.shape[1] - size + 1  # the places a patch's corner can take
    if n > h * w:
        raise ValueError(f"photos: {n} patches of {size}x{size} asked of a {image.shape} half, which has {h * w}")
    corners = rng.choice(h * w, n, replace=False)
    return np.stack([image[i // w:i // w + size, i % w:i % w + size] for i in corners])[:, None]


def photos(seed=0, source_per_class=600, source_test_per_class=150):
    """Real photos from scikit-image's wheel (no download). Source: which of 10 photos or textures a
    24x24 patch comes from. Target: a face or not (LFW crops, 100 faces, 100 non-faces).

    Each photo is cut in two: training patches come from its left half, test patches from its
    right half, so no test patch shares a pixel with a training patch. The patches keep the
    photos' full resolution (shrinking the photos 2x or 4x first did worse on the development
    data, `development_data("photos")`). Target: half of each class is the labelled pool, the
    other half the test set. Deterministic from `seed`.
    """
    try:
        from skimage import data as bundled
    except ImportError:
        raise ImportError("the photos dataset needs scikit-image: pip install 'minitl[lessons]'") from None
    rng = np.random.default_rng(seed)
    patches = {"source_train": [], "source_test": []}
    for name in PHOTOS:
        photo = _unit(getattr(bundled, name)())
        half = photo.shape[1] // 2
        patches["source_train"].append(_patches(photo[:, :half], source_per_class, rng))
        patches["source_test"].append(_patches(photo[:, half:], source_test_per_class, rng))
    splits = {}
    for split, chunks in patches.items():
        y = np.repeat(np.arange(len(PHOTOS)), len(chunks[0]))
        order = rng.permutation(len(y))
        splits[split] = Split(np.concatenate(chunks)[order].astype(np.float32), y[order].astype(np.int64))
    lfw = _unit(bundled.lfw_subset())[:, None, :PHOTO_SIZE, :PHOTO_SIZE]
    labels = np.repeat([0, 1], 100)  # the first 100 are faces, the other 100 non-faces
    pool, test = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        pool.append(idx[:len(idx) // 2]), test.append(idx[len(idx) // 2:])
    for split, chunks in (("target_pool", pool), ("target_test", test)):
        idx = rng.permutation(np.concatenate(chunks))
        splits[split] = Split(lfw[idx].astype(np.float32), labels[idx].astype(np.int64))
    return TransferData(name="photos", source_classes=PHOTOS, target_classes=("face", "non-face"), **splits)


DATASETS = {"glyphs": lambda seed: glyphs(seed=seed), "glyphs-hard": lambda seed: glyphs(hard=True, seed=seed),
            "digits": digits, "photos": photos}


def load_dataset(name, seed=0):
    """One of DATASETS by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}")
    return DATASETS[name](seed)


def development_data(name):
    """The data budgets and lambdas are chosen on, never the reported test set: for the glyphs a
    separate draw from the generator (seed 1); for the digits and the photos, whose images are
    fixed, the reported target pool split in two (half stays the pool, half becomes the
    development test set); the reported target test set is not touched."""
    if name.startswith("glyphs"):
        return load_dataset(name, seed=1)
    d = load_dataset(name, seed=0)
    rng = np.random.default_rng(1)
    keep, held = [], []
    for c in range(len(d.target_classes)):
        idx = rng.permutation(np.flatnonzero(d.target_pool.y == c))
        keep.append(idx[: len(idx) // 2]), held.append(idx[len(idx) // 2:])
    keep, held = np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
    pool = Split(d.target_pool.x[keep], d.target_pool.y[keep])
    test = Split(d.target_pool.x[held], d.target_pool.y[held])
    return TransferData(name=f"{d.name}-dev", source_train=d.source_train, source_test=d.source_test,
                        target_pool=pool, target_test=test, source_classes=d.source_classes,
                        target_classes=d.target_classes)


def k_shot_indices(pool, k, seed=0):
    """Which examples of the pool k_shot(pool, k, seed) takes (all of them, in order, for "all")."""
    if isinstance(k, str) and k == "all":
        return np.arange(len(pool))
    if not is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer or 'all', got {k!r}")
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValueError(f"k_shot: seed must be an integer >= 0 (or None), got {seed!r}")
    k = int(k)
    if len(pool.y) == 0:
        raise ValueError("k_shot: the pool has no examples")
    if not backend.is_integer(pool.y.dtype) or pool.y.min() < 0:
        i = int(np.argmin(pool.y))
        raise ValueError(f"k_shot: labels must be class indices 0, 1, ...; the pool has label {pool.y[i].item()} "
                         f"at position {i}")
    if int(pool.y.max()) >= len(pool.y):  # (and np.bincount of a label like 2**62 would fill memory)
        i = int(np.argmax(pool.y))
        raise ValueError(f"k_shot: the pool has label {int(pool.y[i])} at position {i}, but only {len(pool.y)} "
                         f"examples: classes 0 to {int(pool.y[i])} cannot all have one")
    counts = np.bincount(pool.y)
    if counts.min() == 0:
        raise ValueError(f"k_shot: class {int(np.argmin(counts))} has no examples in the pool (labels are class "
                         f"indices 0, 1, ..., and every class up to the largest label needs examples)")
    if k > counts.min():
        raise ValueError(f"k={k} is more than the {counts.min()} examples per class the pool has "
                         f"(use k <= {counts.min()} or 'all')")
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(pool.y == c), k, replace=False) for c in range(len(counts))])
    return rng.permutation(idx)


def k_shot(pool, k, seed=0):
    """k labelled examples of every class from the pool ("all": the whole pool), drawn with `seed`."""
    if isinstance(k, str) and k == "all":
        return pool
    idx = k_shot_indices(pool, k, seed)
    return Split(pool.x[idx], pool.y[idx])


# ---------------------------------------------------------------- loading batches

class DataLoader:
    """Batches of (x, y) tensors on a device. With shuffle, each epoch draws a new order
    from a generator seeded once, so a seed fixes every epoch's order.

    `device=None` keeps arrays already on the GPU there and sends host arrays to the default
    device. Labels are checked here, while they are still on the host: integer labels must
    be >= 0 (a loss then checks them against its number of classes). `drop_last` leaves out
    a last batch smaller than batch_size, as in PyTorch (with shuffle, different examples
    each epoch).
    """

    def __init__(self, x, y, batch_size, shuffle=False, seed=None, device=None, drop_last=False):
        batch_size = positive_int("DataLoader", "batch_size", batch_size)
        if seed is not None and (not is_int(seed) or seed < 0):
            raise ValueError(f"DataLoader: seed must be an integer >= 0 (or None), got {seed!r}")
        for flag, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, bool):  # shuffle="False" would shuffle
                raise TypeError(f"DataLoader: {flag} must be True or False, got {value!r}")
        x = x if backend.is_array(x) else np.asarray(x)
        y = y if backend.is_array(y) else np.asarray(y)
        if x.ndim < 1 or y.ndim != 1:
            raise ValueError(f"DataLoader: x needs a batch axis and y must be 1-D, got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"DataLoader: x has {len(x)} examples but y has {len(y)}")
        if len(y) == 0:
            raise ValueError("DataLoader: there are no examples (x and y are empty)")
        if drop_last and batch_size > len(y):
            raise ValueError(f"DataLoader: drop_last with batch_size {batch_size} and {len(y)} examples leaves no "
                             f"batch at all")
        if backend.is_integer(y.dtype) and int(y.min()) < 0:
            i = int((y < 0).argmax())
            raise ValueError(f"DataLoader: label {int(y[i])} at position {i} is negative; "
                             f"labels are class indices 0, 1, ...")
        # Labels checked here need no check on the device in cross_entropy (see checked_labels).
        self.classes = int(y.max()) + 1 if backend.is_integer(y.dtype) else None
        device = backend.device_for(device, x)
        # The labels are copied: a change to the caller's array after this check must not reach the batches.
        self.x, self.y = backend.to_device(x, device), backend.to_device(y, device).copy()
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, bool(drop_last)
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.y) // self.batch_size if self.drop_last else -(-len(self.y) // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        # The epoch's order goes to the device once, not a slice of it per batch.
        order = backend.to_device(self.rng.permutation(n), backend.device_of(self.x)) if self.shuffle else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = slice(start, start + self.batch_size) if order is None else order[start:start + self.batch_size]
            x, y = Tensor(self.x[idx]), self.y[idx]
            yield x, Tensor(y) if self.classes is None else checked_labels(y, self.classes)
