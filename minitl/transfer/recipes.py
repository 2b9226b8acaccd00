"""The seed's recipes, in the order a learner meets them: train from scratch, the linear probe
(only theta_y trains on the images), the head from cached features (proxy), fine-tuning every
layer, and fine-tuning regularised towards the source; run_method runs one by name."""

import copy
import math
import time
from dataclasses import dataclass, field

from minitl import backend, nn
from minitl import functional as F
from minitl.checks import is_real
from minitl.data import DataLoader, Split
from minitl.optim import Adam
from minitl.training import accuracy, device_for_model, fit
from minitl.transfer.budgets import Budget, budgets_for
from minitl.transfer.cache import weights_hash
from minitl.transfer.models import TransferCNN, cut, freeze, new_head, output_size, replace_head, unfreeze
from minitl.transfer.regularizers import L2SP, REGULARIZERS, feature_mse


@dataclass
class Result:
    """What a recipe returns: test accuracy, the loss at every step, and wall time."""
    method: str
    accuracy: float
    losses: list
    seconds: float
    model: object = field(default=None, repr=False)


def _loader(x, y, budget, seed, device, model):
    """The recipes' shuffled training batches. A batch of one has no variance to normalise with,
    so for a model whose BatchNorm uses each batch's statistics (a batch-norm TransferCNN being
    fine-tuned or trained from scratch) a last batch of one is left out, as PyTorch's drop_last
    does: 65 examples in batches of 32 train on 64 of them each epoch, a different one left out
    each time. Nothing else changes: every other run gives the same numbers as before."""
    batch = min(budget.batch_size, len(y))
    batch_norm = any(getattr(m, "uses_batch_stats", False) for m in model.modules())
    if batch_norm and batch == 1:
        raise ValueError(f"batch norm needs at least two examples a batch in training, but the budget's batches "
                         f"hold one (batch_size {budget.batch_size}, {len(y)} training examples)")
    return DataLoader(x, y, batch, shuffle=True, seed=seed, device=device, drop_last=batch_norm and len(y) % batch == 1)


def _fit(loss_fn, opt, model, x, y, budget, seed, device, callback):
    """fit() with the budget's steps for this training set and its schedule."""
    return fit(loss_fn, opt, _loader(x, y, budget, seed, device, model), budget.steps_for(len(y)), budget.schedule,
               callback)


def _check_labels(train, num_classes):
    if int(train.y.max()) >= num_classes or int(train.y.min()) < 0:
        raise ValueError(f"the training labels run from {int(train.y.min())} to {int(train.y.max())}, "
                         f"but the head has {num_classes} outputs")


def train_scratch(data, train, budget=Budget(), seed=0, device=None, norm=None, callback=None):
    """A new TransferCNN trained on the target examples alone: the baseline."""
    start = time.perf_counter()
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    c, h, _ = data.image_shape
    with backend.fork_rng(seed):
        model = TransferCNN(num_classes, in_channels=c, image_size=h, norm=norm, device=device)
    opt = Adam(model.parameters(), lr=budget.lr)
    losses = _fit(lambda x, y: F.cross_entropy(model(x), y), opt, model, train.x, train.y, budget, seed, device,
                  callback and (lambda step: callback(step, model)))
    return Result("scratch", accuracy(model, data.target_test, device), losses, time.perf_counter() - start, model)


def linear_probe(source, data, train, budget=Budget(), seed=0, device=None, callback=None, at=None):
    """The seed's "train only theta_y": the source backbone frozen (and in eval mode), a new head trained.
    With `at`, the backbone is cut there (see cut) and the head reads that layer's output."""
    start = time.perf_counter()
    device = device_for_model(source, device)
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    model = copy.deepcopy(source)
    if at is None:
        replace_head(model, num_classes, seed)
        freeze(model.features).eval()
        params = model.head.parameters()
    else:
        trunk = freeze(cut(model, at)).eval()
        model = nn.Sequential(trunk, new_head(output_size(trunk, data), num_classes, seed, device_for_model(trunk)))
        params = model[1].parameters()
    opt = Adam(params, lr=budget.head_lr)
    losses = _fit(lambda x, y: F.cross_entropy(model(x), y), opt, model, train.x, train.y, budget, seed, device,
                  callback and (lambda step: callback(step, model)))
    return Result("linear_probe", accuracy(model, data.target_test, device), losses, time.perf_counter() - start,
                  model)


def train_head(feats, labels, test_feats, test_labels, num_classes, budget=Budget(), seed=0, device=None):
    """A new linear head trained on features (host arrays) with the budget's head learning rate:
    (test accuracy, losses, head). What proxy training and the layer probes run."""
    head = new_head(feats.shape[1], num_classes, seed, device)
    opt = Adam(head.parameters(), lr=budget.head_lr)
    losses = _fit(lambda f, y: F.cross_entropy(head(f), y), opt, head, feats, labels, budget, seed, device, None)
    return accuracy(head, Split(test_feats, test_labels), device), losses, head


def proxy_train(source, data, train, cache, budget=Budget(), seed=0, device=None, name=None, at=None):
    """Proxy collection: the head trained on cached source features, never running the backbone in the loop.

    The same seed gives the same head and the same batches as linear_probe, so the
    two end with the same head weights (up to float rounding): it is the same
    computation, with the backbone's work read from disk. With `at`, the features are
    that layer's (see cut), cached under the cut's name.
    """
    start = time.perf_counter()
    device = device_for_model(source, device)
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    trunk = source.features if at is None else cut(source, at)
    layer = at or "features"
    tag = f"{data.name}-{layer}-{weights_hash(trunk)[:8]}"  # one file per backbone: no two thrash over a name
    feats, test_feats = cached_features(cache, trunk, tag, train, data.target_test, layer, device, name)
    acc, losses, head = train_head(feats, train.y, test_feats, data.target_test.y, num_classes, budget, seed, device)
    model = copy.deepcopy(source)
    if at is None:
        model.head = head
    else:
        model = nn.Sequential(cut(model, at), head)
    return Result("proxy", acc, losses, time.perf_counter() - start, model)


def cached_features(cache, trunk, tag, train, test, layer, device, name=None):
    """The trunk's features of a training split and a test split, through the cache: one file each,
    named by tag and the split's fingerprint (or `name` for the training split)."""
    feats = cache.features(trunk, train, name or f"{tag}-{train.fingerprint()}", layer=layer, device=device)
    test_feats = cache.features(trunk, test, f"{tag}-test-{test.fingerprint()}", layer=layer, device=device)
    return feats, test_feats


def check_cache_on_source_task(source, data, cache, budget=None, device=None):
    """The seed's section 3 read literally: features of the SOURCE data, a head trained on them with
    the source labels. That head can only relearn the source task, so as a transfer method it is
    useless; as a check it is exact: it must recover the source model's own accuracy, which shows
    that the cache holds the backbone's real features. Returns (head accuracy, source model accuracy)
    on the source test set."""
    budget = budget or budgets_for(data.name)["proxy"]
    tag = f"{data.name}-source-{weights_hash(source.features)[:8]}"
    feats, test = cached_features(cache, source.features, tag, data.source_train, data.source_test, "features",
                                   device)
    head_acc, _, _ = train_head(feats, data.source_train.y, test, data.source_test.y, len(data.source_classes),
                                budget, 0, device)
    return head_acc, accuracy(source, data.source_test, device)


def fine_tune(source, data, train, budget=Budget(), seed=0, device=None, regularizer=None, lam=None,
              callback=None):
    """Every layer trains, the backbone at budget.backbone_lr_scale times the head's rate.

    With a regulariser the loss is L = CE + lam * R: "feature_mse" pulls the backbone's
    features towards the frozen source backbone's on the same batch (lam default 0.1);
    "l2sp" pulls the backbone's weights towards the source weights (lam default 0.01).
    The defaults were chosen on glyphs generated with seed 1, a separate draw from the
    seed-0 data the comparison reports, and re-checked with the converged fine-tuning budget
    (benchmarks/budgets.py --lambdas): never on a test set that is reported.
    """
    if regularizer not in (None,) + REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}: choose None or one of {REGULARIZERS}")
    if lam is not None and regularizer is None:
        raise ValueError(f"fine_tune: lam={lam!r} was given without a regularizer: name one of {REGULARIZERS}")
    if lam is not None and not (is_real(lam) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"fine_tune: lam must be a finite number >= 0 (the weight of R in CE + lam * R), got {lam!r}")
    start = time.perf_counter()
    device = device_for_model(source, device)
    num_classes = len(data.target_classes)
    _check_labels(train, num_classes)
    model = unfreeze(replace_head(copy.deepcopy(source), num_classes, seed))
    opt = Adam([{"params": list(model.features.parameters()), "lr": budget.head_lr * budget.backbone_lr_scale},
                {"params": list(model.head.parameters())}], lr=budget.head_lr)
    if regularizer == "feature_mse":
        lam = 0.1 if lam is None else lam
        source_backbone = freeze(copy.deepcopy(source.features)).eval()

        def loss_fn(x, y):
            f = model.features(x)
            return F.cross_entropy(model.head(f), y) + lam * feature_mse(f, source_backbone(x))
    elif regularizer == "l2sp":
        lam = 0.01 if lam is None else lam
        penalty = L2SP(model.features)

        def loss_fn(x, y):
            return F.cross_entropy(model(x), y) + lam * penalty()
    else:
        def loss_fn(x, y):
            return F.cross_entropy(model(x), y)
    losses = _fit(loss_fn, opt, model, train.x, train.y, budget, seed, device,
                  callback and (lambda step: callback(step, model)))
    method = "fine_tune" if regularizer is None else f"fine_tune+{regularizer}"
    return Result(method, accuracy(model, data.target_test, device), losses, time.perf_counter() - start, model)


METHODS = ("scratch", "linear_probe", "proxy", "fine_tune", "fine_tune+feature_mse", "fine_tune+l2sp")


def run_method(method, source, data, train, cache, budget=Budget(), seed=0, device=None, **options):
    """One method by name, as the comparison table runs it: a Result. `options` go to the recipe
    (callback=f(step, model), which the methods that train a model on images call; at= for the probe,
    lam= for the regularised fine-tunings)."""
    if method == "scratch":
        return train_scratch(data, train, budget, seed, device, norm=source.norm, **options)
    if method == "linear_probe":
        return linear_probe(source, data, train, budget, seed, device, **options)
    if method == "proxy":  # a head on cached features: no model runs on images, so no callback
        options.pop("callback", None)
        return proxy_train(source, data, train, cache, budget, seed, device, **options)
    if method in METHODS:  # fine_tune, alone or with the regulariser named after its "+"
        regularizer = method.partition("+")[2] or None
        return fine_tune(source, data, train, budget, seed, device, regularizer=regularizer, **options)
    raise ValueError(f"unknown method {method!r}: choose from {METHODS}")
