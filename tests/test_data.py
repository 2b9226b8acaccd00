"""Datasets and the DataLoader."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minitl as mt
from minitl import data


@pytest.fixture(scope="module")
def small():
    return data.glyphs(seed=3, source_per_class=40, source_test_per_class=10, target_pool_per_class=30,
                       target_test_per_class=20)


def test_glyphs_are_deterministic_from_the_seed(small):
    again = data.glyphs(seed=3, source_per_class=40, source_test_per_class=10, target_pool_per_class=30,
                        target_test_per_class=20)
    other = data.glyphs(seed=4, source_per_class=40, source_test_per_class=10, target_pool_per_class=30,
                        target_test_per_class=20)
    assert np.array_equal(small.source_train.x, again.source_train.x)
    assert np.array_equal(small.target_test.y, again.target_test.y)
    assert not np.array_equal(small.source_train.x, other.source_train.x)


def test_glyphs_are_balanced_float32_in_unit_range(small):
    for split, per_class in ((small.source_train, 40), (small.target_pool, 30), (small.target_test, 20)):
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (1, 16, 16)
        assert split.x.min() >= 0 and split.x.max() <= 1
        assert np.array_equal(np.bincount(split.y), [per_class] * 5)
    assert set(small.source_classes).isdisjoint(small.target_classes)


def test_the_hard_variant_is_noisier():
    easy = data.glyphs(seed=0, source_per_class=20, source_test_per_class=1, target_pool_per_class=1,
                       target_test_per_class=1)
    hard = data.glyphs(hard=True, seed=0, source_per_class=20, source_test_per_class=1, target_pool_per_class=1,
                       target_test_per_class=1)
    assert hard.name == "glyphs-hard"
    assert hard.source_train.x.std() > easy.source_train.x.std()


def test_k_shot_takes_k_per_class_from_the_pool_only(small):
    train = data.k_shot(small.target_pool, 5, seed=1)
    assert np.array_equal(np.bincount(train.y), [5] * 5)
    pool_rows = {row.tobytes() for row in small.target_pool.x}
    test_rows = {row.tobytes() for row in small.target_test.x}
    picked = [row.tobytes() for row in train.x]
    assert len(set(picked)) == len(picked)            # no example twice
    assert all(r in pool_rows for r in picked)        # all from the pool
    assert not any(r in test_rows for r in picked)    # never from the test set
    assert data.k_shot(small.target_pool, "all") is small.target_pool
    assert np.array_equal(data.k_shot(small.target_pool, 5, seed=1).x, train.x)


@pytest.mark.parametrize("k, message", [(31, "k=31 is more than the 30 examples per class"),
                                        (0, "positive integer"), ("some", "positive integer")])
def test_bad_k_is_named(small, k, message):
    with pytest.raises(ValueError, match=message):
        data.k_shot(small.target_pool, k)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist': choose one of \['digits', 'glyphs', "):
        data.load_dataset("mnist")


def test_digits_split_source_and_target_digits():
    pytest.importorskip("sklearn")
    d = data.digits()
    assert d.image_shape == (1, 8, 8)
    total = sum(len(s) for s in (d.source_train, d.source_test, d.target_pool, d.target_test))
    assert total == 1797
    assert set(np.unique(d.target_pool.y)) == set(range(5))


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage")
    return data.photos(seed=0)


def test_photos_are_patches_and_faces_in_unit_range(photos):
    assert photos.image_shape == (1, data.PHOTO_SIZE, data.PHOTO_SIZE) and data.PHOTO_SIZE % 4 == 0
    assert photos.source_classes == data.PHOTOS and photos.target_classes == ("face", "non-face")
    for split, counts in ((photos.source_train, [600] * 10), (photos.source_test, [150] * 10),
                          (photos.target_pool, [50, 50]), (photos.target_test, [50, 50])):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.min() >= 0 and split.x.max() <= 1
        assert np.array_equal(np.bincount(split.y), counts)
    from minitl import transfer
    model = transfer.model_for(photos)  # TransferCNN takes 24x24 images
    assert model(mt.tensor(photos.target_test.x[:3])).shape == (3, len(photos.source_classes))


def test_photos_target_pool_and_test_are_the_200_faces_and_non_faces_once(photos):
    from skimage.data import lfw_subset
    lfw = lfw_subset()
    pool, test = photos.target_pool, photos.target_test
    rows = [x.tobytes() for x in np.concatenate([pool.x, test.x])]
    assert len(set(rows)) == 200                      # no image in both, none twice
    expected = {lfw[i, :24, :24].astype(np.float32).tobytes(): int(i >= 100) for i in range(200)}
    labels = np.concatenate([pool.y, test.y])
    assert all(expected[r] == y for r, y in zip(rows, labels))   # the first 100 are faces (class 0)
    assert data.k_shot(pool, 20, seed=0).x.shape == (40, 1, 24, 24)
    with pytest.raises(ValueError, match="k=51 is more than the 50 examples per class"):
        data.k_shot(pool, 51)
    dev = data.development_data("photos")  # budgets are chosen on half the pool, never on the test set
    for split in (dev.target_pool, dev.target_test):
        assert np.array_equal(np.bincount(split.y), [25, 25])
    assert {x.tobytes() for x in dev.target_test.x} <= {x.tobytes() for x in pool.x}


def test_photos_are_deterministic_from_the_seed(photos):
    again, other = data.photos(seed=0), data.photos(seed=1)
    for name in ("source_train", "source_test", "target_pool", "target_test"):
        assert np.array_equal(getattr(photos, name).x, getattr(again, name).x)
        assert np.array_equal(getattr(photos, name).y, getattr(again, name).y)
        assert not np.array_equal(getattr(photos, name).x, getattr(other, name).x)
    assert data.load_dataset("photos").source_train.fingerprint() == photos.source_train.fingerprint()


def test_photos_train_on_the_left_half_and_test_on_the_right(monkeypatch):
    """Photos whose every pixel holds its own position: each patch says where it was cut from."""
    skimage_data = pytest.importorskip("skimage.data")
    h, w, size = 60, 101, data.PHOTO_SIZE
    for name in data.PHOTOS:
        monkeypatch.setattr(skimage_data, name, lambda: np.arange(h * w, dtype=np.float64).reshape(h, w))
    d = data.photos(seed=2, source_per_class=30, source_test_per_class=30)
    for split, columns in ((d.source_train, range(0, w // 2)), (d.source_test, range(w // 2, w))):
        for patch in split.x[:, 0]:
            top, left = divmod(int(patch[0, 0]), w)
            expected = np.arange(h * w).reshape(h, w)[top:top + size, left:left + size]
            assert np.array_equal(patch, expected)                            # a whole window of the photo
            assert left in columns and left + size - 1 in columns             # inside its own half
    train_windows = {p.tobytes() for p in d.source_train.x}
    assert not train_windows & {p.tobytes() for p in d.source_test.x}


def test_photos_without_scikit_image_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now fails, as if it were not installed
    with pytest.raises(ImportError, match=r"^the photos dataset needs scikit-image: pip install 'minitl\[lessons\]'$"):
        data.load_dataset("photos")


def test_the_command_without_scikit_image_says_so_in_one_line(tmp_path):
    (tmp_path / "skimage").mkdir()
    (tmp_path / "skimage" / "__init__.py").write_text("raise ModuleNotFoundError('no scikit-image here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "minitl", "--dataset", "photos", "--quick"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip() == "error: the photos dataset needs scikit-image: pip install 'minitl[lessons]'"


def test_dataloader_covers_every_example_once_per_epoch_in_a_seeded_order(device):
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    loader = data.DataLoader(x, y, batch_size=4, shuffle=True, seed=0, device=device)
    assert len(loader) == 3
    epochs = [np.concatenate([mt.backend.to_host(b[1].data) for b in loader]) for _ in range(2)]
    assert sorted(epochs[0]) == list(range(10)) and not np.array_equal(epochs[0], epochs[1])
    again = data.DataLoader(x, y, batch_size=4, shuffle=True, seed=0)
    assert np.array_equal(np.concatenate([b[1].numpy() for b in again]), epochs[0])
    xb, yb = next(iter(loader))
    assert xb.device == device and np.array_equal(mt.backend.to_host(xb.data)[:, 0], mt.backend.to_host(yb.data))


def test_drop_last_leaves_out_a_short_last_batch_as_pytorch_does(device):
    y = np.arange(10)
    loader = data.DataLoader(y[:, None].astype(np.float32), y, batch_size=4, device=device, drop_last=True)
    assert len(loader) == 2 and [len(b[1]) for b in loader] == [4, 4]
    assert [len(b[1]) for b in data.DataLoader(y[:, None], y, 5, drop_last=True)] == [5, 5]  # nothing to drop
    shuffled = data.DataLoader(y[:, None], y, 3, shuffle=True, seed=0, drop_last=True)
    left_out = [set(range(10)) - set(np.concatenate([b[1].numpy() for b in shuffled])) for _ in range(4)]
    assert all(len(s) == 1 for s in left_out) and len(set.union(*left_out)) > 1  # a different one each epoch
    with pytest.raises(ValueError, match="drop_last with batch_size 4 and 3 examples leaves no batch"):
        data.DataLoader(y[:3, None], y[:3], 4, drop_last=True)
    with pytest.raises(TypeError, match="shuffle must be True or False, got 'False'"):
        data.DataLoader(y[:, None], y, 4, shuffle="False")  # a non-empty string is true: it shuffled


def test_dataloader_bad_input():
    with pytest.raises(ValueError, match="x has 3 examples but y has 2"):
        data.DataLoader(np.zeros((3, 1)), np.zeros(2), 2)


def test_the_dataloader_keeps_its_own_copy_of_the_labels_it_checked(device):
    y = np.array([0, 1, 2, 1])
    loader = data.DataLoader(np.zeros((4, 2), dtype=np.float32), y, 4, device=device)
    y[0] = -5  # after the check: the loader's batches must not see it
    _, labels = next(iter(loader))
    assert mt.backend.to_host(labels.data).tolist() == [0, 1, 2, 1]
