"""Lesson 6: feature extraction and proxy collection.

What you will learn: when the backbone is frozen its output never changes, so it
can be computed once. Proxy collection (the seed's word): run the source
backbone over the target data one time, store the features on disk with a
manifest saying which weights and which data made them, then train the head
from the stored features, many times, without ever running the backbone again.

Run it:  python lessons/06_feature_extraction_and_proxy_collection.py [--quick] [--device cpu|cuda]

What to look for: the second read is a cache hit; a changed backbone is noticed
and recomputed; the head trained from the cache ends where the linear probe (the
head trained through the frozen backbone, as in lesson 5) ends, given the same
seed and so the same batches: the same accuracy, many times faster.
"""

import copy
import time

from minitl import data, transfer
from minitl.report import lesson_arguments, table

args = lesson_arguments(__doc__)

# ---- constants
K = 20
SEED = 0
BUDGET = transfer.Budget(steps=60 if args.quick else 300)   # the same budget for both ways

# ---- 1. the source model and the target examples
glyphs = data.glyphs(seed=0)
source = transfer.source_model(glyphs, args.device)
train = data.k_shot(glyphs.target_pool, K, seed=SEED)
cache = transfer.FeatureCache()
print("cache folder:", cache.folder)

# ---- 2. extract once: the backbone runs over the data under no_grad, in eval mode
name = f"lesson6-{train.fingerprint()}"
start = time.perf_counter()
feats = cache.features(source.features, train, name, device=args.device)
t_first = time.perf_counter() - start
first_status = cache.last
print(f"features {feats.shape} {feats.dtype}: {first_status} in {t_first * 1e3:.1f} ms")

# ---- 3. read again: the manifest matches, so nothing is computed
start = time.perf_counter()
cache.features(source.features, train, name, device=args.device)
t_hit = time.perf_counter() - start
print(f"second read: {cache.last} in {t_hit * 1e3:.1f} ms")

# ---- 4. a different backbone cannot reuse these features: the manifest says so
changed = copy.deepcopy(source)
changed.features[0].weight.data *= 1.01
cache.features(changed.features, train, name, device=args.device)
changed_status = cache.last
cache.features(source.features, train, name, device=args.device)  # put the source's features back

# ---- 5. train the head both ways with the same seed: through the frozen backbone, and from the cache
probe = transfer.linear_probe(source, glyphs, train, BUDGET, seed=SEED, device=args.device)
proxy = transfer.proxy_train(source, glyphs, train, cache, BUDGET, seed=SEED, device=args.device)
gap = float(abs(probe.model.head.weight.data - proxy.model.head.weight.data).max())
print(f"largest difference between the two heads' weights: {gap:.1e}")

print()
print(table(["", "linear probe", "proxy (from cache)"], [
    ["target test accuracy", probe.accuracy, proxy.accuracy],
    ["seconds per run", f"{probe.seconds:.3f}", f"{proxy.seconds:.3f}"],
    ["speed-up", "", f"{probe.seconds / proxy.seconds:.1f}x"],
    ["cache: first read", first_status, f"{t_first * 1e3:.1f} ms"],
    ["cache: second read", "hit", f"{t_hit * 1e3:.1f} ms"],
    ["cache: changed backbone", changed_status, ""],
]))
