"""Damaged files: checkpoints (mt.load, source_model) and feature caches. Every kind of damage
gives a clear error naming the file, or a recomputation that says why; never a wrong result."""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from conftest import quiet

import minitl as mt
from minitl import data, transfer


def members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def rezip(path, new_members):
    """Write members back into a valid zip (correct CRCs): the damage is then inside the .npy itself."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, raw in new_members.items():
            z.writestr(name, raw)


def edit_member(path, name, edit):
    m = members(path)
    m[name] = edit(m[name])
    rezip(path, m)


def flip_in_file(path, needle, replacement):
    """Edit bytes in place, leaving the zip's CRCs stale (what a bad disk or a hex editor does)."""
    raw = path.read_bytes()
    assert needle in raw
    path.write_bytes(raw.replace(needle, replacement, 1))


def break_header(raw):
    return raw.replace(b"'descr'", b"'de(cr'")  # the header's literal no longer parses


def huge_shape(raw):
    """A 40 TB claim in the header, the header's length unchanged (the padding spaces give way)."""
    return raw.replace(b"'shape': (4, 3), }", b"'shape': (4000000000000, 3), }").replace(b" " * 12 + b"\n", b"\n", 1)


def nested_members(members, inner):
    """A zip of stored members that nest: each member's array holds the next member's whole record
    (header and data), so reading every member reads the same bytes again and again."""
    names = [f"m{i:03d}.npy".encode() for i in range(members)]
    record, parts = b"\0" * inner, []
    for name in reversed(names):
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (len(record),)})
        data = head.getvalue() + record
        parts.insert(0, (len(head.getvalue()), data))
        record = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                             len(name), 0) + name + data
    central, offset = b"", 0
    for name, (head, data) in zip(names, parts):
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data), len(data),
                               len(data), len(name), 0, 0, 0, 0, 0, offset) + name
        offset += 30 + len(name) + head  # the next member starts inside this one's data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, members, members, len(central), len(record), 0)
    return record + central + end


def member_size_claims(path, size):
    """The central directory's first entry claims `size` stored bytes (its data stays where it was)."""
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")
    raw[entry + 20:entry + 28] = struct.pack("<LL", size, size)  # compressed and uncompressed sizes
    path.write_bytes(bytes(raw))


# Each damage: (how to apply it to a checkpoint holding "w": float32 (4, 3)), the phrase the error must contain.
DAMAGES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
    "dtype edited in place (CRC stale)": (lambda p: flip_in_file(p, b"'<f4'", b"'<f2'"), "damaged"),
    "dtype edited, CRC recomputed": (lambda p: edit_member(p, "w.npy", lambda r: r.replace(b"'<f4'", b"'<f2'")),
                                     "its header says float16 of shape (4, 3) (24 bytes) but it holds 48 bytes"),
    "a header byte that breaks parsing": (lambda p: edit_member(p, "w.npy", break_header), "has a damaged header"),
    "a data byte flipped (CRC stale)": (lambda p: flip_in_file(p, np.float32(1.5).tobytes(), np.float32(-7).tobytes()),
                                        "damaged"),
    "a header claiming a huge shape": (lambda p: edit_member(p, "w.npy", huge_shape),
                                       "shape (4000000000000, 3) (48000000000000 bytes) but it holds"),
    "an object array inside": (lambda p: edit_member(p, "w.npy", lambda r: r.replace(b"'<f4'", b"'|O' ")),
                               "holds object data"),
    "not a zip at all": (lambda p: p.write_bytes(b"hello"), "not an .npz archive"),
    "members nested inside each other": (lambda p: p.write_bytes(nested_members(3, 100)), "overlapping members"),
    "a member claiming more bytes than the file": (lambda p: member_size_claims(p, 2**31), "past the end of the file"),
}


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    mt.save({"w": np.full((4, 3), 1.5, dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}, path)
    return path


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_checkpoint_is_a_clear_error_naming_the_file(checkpoint, damage):
    apply, phrase = DAMAGES[damage]
    apply(checkpoint)
    with pytest.raises(ValueError) as caught:
        mt.load(checkpoint)
    message = str(caught.value)
    assert str(checkpoint) in message and phrase in message, message


def test_nested_members_are_refused_before_any_is_read(tmp_path):
    path = tmp_path / "nested.npz"
    path.write_bytes(nested_members(50, 1 << 20))  # 1 MiB on disk; every member read: 50 MiB in memory
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="overlapping members"):
            mt.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size, f"{peak / path.stat().st_size:.1f}x the file's size in memory"


def safetensors_header(path, edit):
    """Rewrite a .safetensors file's JSON header through `edit` (the data stays as it was)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


SAFETENSORS_DAMAGES = {
    "a data byte flipped": (lambda p: p.write_bytes(p.read_bytes()[:-2] + b"\xff\xff"), "does not match its checksum"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-8]), "needs 12 bytes, but its offsets are"),
    "a header longer than the file": (lambda p: p.write_bytes(struct.pack("<Q", 10**9) + p.read_bytes()[8:]),
                                      "its header claims 1000000000 bytes"),
    "two tensors on the same bytes": (lambda p: safetensors_header(p, lambda h: h["b"].update(
        data_offsets=h["w"]["data_offsets"][:1] + [h["w"]["data_offsets"][0] + 12])), "overlap"),
    "a shape claiming 10**30 elements": (lambda p: safetensors_header(p, lambda h: h["w"].update(shape=[10**30])),
                                         "needs 4000000000000000000000000000000 bytes"),
    "bfloat16": (lambda p: safetensors_header(p, lambda h: h["w"].update(dtype="BF16")), "unknown or missing 'BF16'"),
    "not JSON": (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"{{{{" + p.read_bytes()[8:]), "not JSON"),
    "metadata that is a number": (lambda p: safetensors_header(p, lambda h: h.update(__metadata__=5)),
                                  "its metadata is a int"),
    "checksums that are a list": (lambda p: safetensors_header(p, lambda h: h["__metadata__"].update(
        minitl_sha256="[1, 2]")), "checksums (metadata) are damaged"),
    "a shape of true": (lambda p: safetensors_header(p, lambda h: h["w"].update(shape=[True, 12])),
                        "has a damaged entry"),
    # one byte of the header changed: the checksum covers each tensor's name, dtype and shape too
    "a dtype flipped F32 -> I32": (lambda p: p.write_bytes(p.read_bytes().replace(b'"F32"', b'"I32"', 1)),
                                   "does not match its checksum"),
    "a shape flipped [4,3] -> [3,4]": (lambda p: p.write_bytes(p.read_bytes().replace(b"[4,3]", b"[3,4]", 1)),
                                       "does not match its checksum"),
    "the checksum key renamed": (lambda p: p.write_bytes(p.read_bytes().replace(b"minitl_sha256", b"minitl_sha257")),
                                 "has one of 'minitl_format' and 'minitl_sha256' but not the other"),
    "bytes left over": (lambda p: p.write_bytes(p.read_bytes() + b"xx"), "do not fill its"),
    "a header nested 10**5 deep": (lambda p: p.write_bytes(struct.pack("<Q", 200016) + b'{"a":' + b"[" * 100000
                                                           + b"]" * 100000 + b"}" + p.read_bytes()[8:]), "not JSON"),
}


@pytest.mark.parametrize("damage", SAFETENSORS_DAMAGES, ids=list(SAFETENSORS_DAMAGES))
def test_a_damaged_safetensors_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    mt.save({"w": np.full((4, 3), 1.5, dtype=np.float32), "b": np.arange(3, dtype=np.float32)}, path)
    assert sorted(mt.load(path)) == ["b", "w"] and (mt.load(path)["w"] == 1.5).all()  # the round trip first
    apply, phrase = SAFETENSORS_DAMAGES[damage]
    apply(path)
    with pytest.raises(ValueError) as caught:
        mt.load(path)
    assert str(path) in str(caught.value) and phrase in str(caught.value), str(caught.value)


def test_load_of_a_npy_file_is_a_value_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        mt.load(tmp_path / "a.npy")


def test_load_of_a_folder_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        mt.load(tmp_path)


# ---------------------------------------------------------------- saving loses nothing

def test_any_key_survives_a_round_trip(tmp_path):
    state = {"allow_pickle": np.ones(2), "file": np.zeros(1), "args": np.arange(3), "features.0.weight": np.eye(2)}
    mt.save(state, tmp_path / "x.npz")
    back = mt.load(tmp_path / "x.npz")
    assert list(back) == list(state)
    for k in state:
        assert np.array_equal(back[k], state[k])


def test_object_arrays_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="'w' holds object data"):
        mt.save({"w": np.array([None, 1])}, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_saved_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        mt.save({"w": np.ones(2)}, tmp_path / "x.npz")
    finally:
        os.umask(old)
    assert oct((tmp_path / "x.npz").stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("before, after", [(0o600, 0o600), (0o640, 0o640), (0o000, 0o644), (0o200, 0o644)])
def test_a_file_written_again_keeps_its_permissions_unless_unreadable(tmp_path, before, after):
    path = tmp_path / "x.npz"
    mt.save({"w": np.ones(2)}, path)
    path.chmod(before)
    old = os.umask(0o022)
    try:
        mt.save({"w": np.zeros(2)}, path)  # a mode-000 file copied its mode: a cache unreadable on every call
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(after)
    assert (mt.load(path)["w"] == 0).all()


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "x.npz"
    mt.save({"w": np.ones(2)}, path)
    path.chmod(0o444)  # the rename replaced it anyway: os.replace never asks the old file
    with pytest.raises(PermissionError, match=r"x.npz is read-only \(mode 0444\)"):
        mt.save({"w": np.zeros(2)}, path)
    assert (mt.load(path)["w"] == 1).all() and sorted(os.listdir(tmp_path)) == ["x.npz"]


def test_a_temp_file_left_by_a_killed_process_is_never_read(tmp_path):
    d = data.glyphs(source_per_class=30, source_test_per_class=5, target_pool_per_class=5, target_test_per_class=5)
    model = transfer.source_model(d, folder=str(tmp_path), log=quiet)
    path = transfer.source_model_path(d, folder=str(tmp_path))
    # a writer killed mid-save leaves its temporary file beside the checkpoint
    stray = tmp_path / f".{os.path.basename(path)}.999-dead.partial"
    stray.write_bytes(b"PK half a zip")
    said = []
    again = transfer.source_model(d, folder=str(tmp_path), log=said.append)
    assert said == [] and np.array_equal(again.head.weight.numpy(), model.head.weight.numpy())


def test_two_writers_of_one_path_never_share_a_temp_file(tmp_path):
    from minitl.io import atomic_write
    path = tmp_path / "results.json"
    with atomic_write(path, "w") as a, atomic_write(path, "w") as b:
        assert a.name != b.name
        a.write('{"a": 1}')
        b.write('{"b": 2}')
    assert json.loads(path.read_text()) in ({"a": 1}, {"b": 2})
    assert os.listdir(tmp_path) == ["results.json"]


# ---------------------------------------------------------------- a damaged source model is retrained, never used

def test_a_source_model_with_an_edited_dtype_is_retrained_not_used(tmp_path):
    d = data.glyphs(source_per_class=30, source_test_per_class=5, target_pool_per_class=5, target_test_per_class=5)
    model = transfer.source_model(d, folder=str(tmp_path), log=quiet)
    path = transfer.source_model_path(d, folder=str(tmp_path))
    edit_member(path, "features.0.weight.npy", lambda r: r.replace(b"'<f4'", b"'<f2'"))
    said = []
    again = transfer.source_model(d, folder=str(tmp_path), log=said.append)
    assert any("unusable" in s and "features.0.weight" in s for s in said)
    assert np.array_equal(again.head.weight.numpy(), model.head.weight.numpy())


def test_the_cli_names_a_damaged_cache_file_instead_of_a_traceback(tmp_path):
    d = data.load_dataset("glyphs")
    path = transfer.source_model_path(d, folder=str(tmp_path))
    mt.save({"x": np.zeros(1)}, path)
    edit_member(path, "x.npy", break_header)
    done = subprocess.run([sys.executable, "-m", "minitl", "--methods", "proxy", "--k", "2", "--seeds", "1",
                           "--steps", "2"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, MINITL_CACHE=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "source model cache unusable" in done.stdout and "damaged header" in done.stdout
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- feature caches

@pytest.fixture(scope="module")
def small():
    d = data.glyphs(seed=2, source_per_class=30, source_test_per_class=5, target_pool_per_class=6,
                    target_test_per_class=5)
    mt.manual_seed(0)
    return d, transfer.model_for(d)


def fresh(small, tmp_path):
    d, model = small
    cache = transfer.FeatureCache(str(tmp_path), log=quiet)
    good = cache.features(model.features, d.target_pool, "pool")
    return d, model, cache, good


CACHE_DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "a feature value flipped, CRC recomputed": lambda p: edit_member(
        p, "features.npy", lambda r: r[:-4] + np.float32(123.0).tobytes()),
    "a header byte that breaks parsing": lambda p: edit_member(p, "features.npy", break_header),
    "the manifest is a JSON list": lambda p: edit_member(p, "manifest.npy", lambda r: _npy(b"[1, 2]")),
    "the manifest is not JSON": lambda p: edit_member(p, "manifest.npy", lambda r: _npy(b"{oops")),
    "the features member is missing": lambda p: rezip(p, {k: v for k, v in members(p).items() if k != "features.npy"}),
}


def _npy(raw):
    f = io.BytesIO()
    np.save(f, np.frombuffer(raw, dtype=np.uint8))
    return f.getvalue()


@pytest.mark.parametrize("damage", CACHE_DAMAGES, ids=list(CACHE_DAMAGES))
def test_a_damaged_cache_is_recomputed_and_says_why(small, tmp_path, damage):
    d, model, cache, good = fresh(small, tmp_path)
    CACHE_DAMAGES[damage](pathlib.Path(cache.path("pool")))
    again = cache.features(model.features, d.target_pool, "pool")
    assert cache.last.startswith("recomputed: the file is unreadable"), cache.last
    assert np.array_equal(again, good)
    assert cache.features(model.features, d.target_pool, "pool") is not None and cache.last == "hit"


def test_a_shorter_backbone_with_the_same_weights_is_not_a_hit(small, tmp_path):
    d, model, cache, good = fresh(small, tmp_path)
    feats = cache.features(model.features[:3], d.target_pool, "pool")  # conv, relu, pool: the same first weights
    assert cache.last.startswith("recomputed: it was made for another backbone structure")
    assert feats.shape == (30, 16, 8, 8)


def test_max_pool_swapped_for_avg_pool_is_not_a_hit(small, tmp_path):
    d, model, cache, good = fresh(small, tmp_path)
    import copy
    swapped = copy.deepcopy(model.features)
    swapped._modules["2"] = mt.nn.AvgPool2d(2)
    object.__setattr__(swapped, "2", swapped._modules["2"])
    feats = cache.features(swapped, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for another backbone structure"
    assert not np.array_equal(feats, good)


def test_a_cache_of_an_older_format_is_recomputed(small, tmp_path):
    d, model, cache, good = fresh(small, tmp_path)
    path = cache.path("pool")
    stored = mt.load(path)
    manifest = json.loads(bytes(stored["manifest"]).decode())
    manifest["format"] = 1
    stored["manifest"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    mt.save(stored, path)
    cache.features(model.features, d.target_pool, "pool")
    assert cache.last == "recomputed: it was made for an older file format"
