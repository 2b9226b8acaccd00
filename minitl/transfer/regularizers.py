"""The regularisers R of L = CE + lambda * R(f^; f): how far fine-tuning moves from the source."""

from minitl import functional as F
from minitl.tensors import Tensor


def feature_mse(features, source_features):
    """DELTA-style R: mean over batch and feature axes of (f_hat - f)^2, f from the frozen source backbone
    on the same batch (detached: the source is a fixed target). lambda ~ 0.1 is a moderate pull."""
    return F.mse_loss(features, source_features.detach())


def feature_mse_composed(features, source_features):
    return F.mse_loss_composed(features, source_features.detach())


class L2SP:
    """L2-SP: R = 1/2 sum ||w - w_source||^2 over a backbone's parameters, anchored where they
    are when this is created. A sum, not a mean: lambda ~ 1e-3 to 1e-2 suits a 30k-weight backbone."""

    def __init__(self, backbone):
        self.params = list(backbone.parameters())
        self.anchors = [p.data.copy() for p in self.params]

    def __call__(self):
        return F.l2sp_penalty(self.params, self.anchors)

    def composed(self):
        total = 0
        for p, a in zip(self.params, self.anchors):
            total = ((p - Tensor(a)) ** 2).sum() + total
        return total * 0.5


REGULARIZERS = ("feature_mse", "l2sp")  # fine_tune(regularizer=...): feature_mse, or L2SP's weights
