"""The source model: trained once on the source task and cached on disk (the seed's step 1)."""

import hashlib
import json
import os
import time

from minitl import backend
from minitl import functional as F
from minitl.data import DataLoader
from minitl.io import load, save
from minitl.optim import Adam
from minitl.training import accuracy, fit
from minitl.transfer.cache import cache_dir
from minitl.transfer.models import architecture, model_for

SOURCE_STEPS, SOURCE_LR, SOURCE_BATCH = 500, 2e-3, 64


def train_source(data, device=None, seed=0, steps=SOURCE_STEPS, norm=None):
    """Train a TransferCNN on the source task (Adam, a fixed number of steps); returns it."""
    with backend.fork_rng(seed):
        model = model_for(data, device, norm)
    opt = Adam(model.parameters(), lr=SOURCE_LR)
    loader = DataLoader(data.source_train.x, data.source_train.y, SOURCE_BATCH, shuffle=True, seed=seed,
                        device=device)
    fit(lambda x, y: F.cross_entropy(model(x), y), opt, loader, steps)
    return model


def source_model_path(data, seed=0, folder=None, norm=None, steps=SOURCE_STEPS, lr=SOURCE_LR, batch=SOURCE_BATCH):
    """Where the source model trained on this data, architecture and recipe (steps, lr, batch, seed) is
    kept: a different recipe is a different file, so a model trained another way is never mistaken
    for source_model's."""
    recipe = json.dumps([data.name, data.source_train.fingerprint(), architecture(data, norm), steps, lr, batch, seed])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return os.path.join(cache_dir(folder), f"source-{data.name}{'-' + norm if norm else ''}-{digest}.npz")


def source_model(data, device=None, seed=0, folder=None, log=print, norm=None, verbose=False):
    """The source model for `data`: loaded from the cache folder when a file for exactly this
    data, architecture and training recipe is there; trained and saved otherwise (seconds).
    verbose=True also says which file was loaded, and the model's source test accuracy."""
    path = source_model_path(data, seed, folder, norm)
    if os.path.exists(path):
        try:
            with backend.fork_rng(seed):  # the weights are about to be overwritten: no global draw either way
                model = model_for(data, device, norm)
            state = load(path)
            finite = backend.numpy_host.isfinite
            bad = [name for name, a in state.items() if a.dtype.kind == "f" and not finite(a).all()]
            if bad:  # a model with NaN weights would train every later run into NonFiniteLoss
                raise ValueError(f"{', '.join(bad)} in {path} hold NaN or infinite values")
            model.load_state_dict(state)
            if verbose:
                log(f"loaded the source model from {path} "
                    f"(source test accuracy {accuracy(model, data.source_test, device):.3f})")
            return model
        except ValueError as e:
            log(f"source model cache unusable ({e}); training again")
    start = time.perf_counter()
    model = train_source(data, device, seed, norm=norm)
    save(model.state_dict(), path)
    log(f"trained the source model on {data.name} in {time.perf_counter() - start:.1f} s "
        f"(source test accuracy {accuracy(model, data.source_test, device):.3f}); saved to {path}")
    return model
