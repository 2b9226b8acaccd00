"""Transfer learning, as the seed describes it.

1. train a source model on the source task (`source_model`, cached on disk);
2. build the target model from it: a new head for the target classes
   (`replace_head`), everything else frozen (`freeze`), so only theta_y trains;
3. compute the frozen layers' features of the target data (`extract_features`), from the
   last layer or from any layer (`cut`: the seed's features are "a convolution layer's output");
4. keep them on disk with a manifest (`FeatureCache`: proxy collection);
5. train the head on those features (`proxy_train`), or on the images (`linear_probe`);
6. evaluate on the held-out target test set.

Fine-tuning every layer, and fine-tuning regularised towards the source model
(L = CE + lambda * R), are here too, so every method can be compared on one table.

The seed's section 3, read literally, computes features of the SOURCE data and trains the
head on (h_s, y_s). With the source labels such a head can only predict source classes: it
relearns the source task, and cannot classify a single target example. minitl therefore
trains the target head on target features (section 2's step 3, which section 3 repeats for
the cached variant). The literal reading is still useful, as a check: a head trained on the
cached source features with the source labels must recover the source model's own accuracy,
which shows the cache holds the backbone's real features (`check_cache_on_source_task`,
printed by `python -m minitl`). Where the article trains "until the accuracy is good enough",
minitl trains for a budget fixed in advance on development data (`BUDGETS`), so that no
number is tuned on the test set it reports.
"""

# The package, in the order of the seed: the model and cutting it (models), the source model
# trained once and cached (source), proxy collection (cache), the regularisers (regularizers),
# the budgets fixed in advance (budgets), and the recipes that use them all (recipes).
from minitl.transfer.budgets import BUDGETS, DIGITS_BUDGETS, Budget, budgets_for
from minitl.transfer.cache import FeatureCache, cache_dir, extract_features, module_settings, weights_hash
from minitl.transfer.models import (
                                    NORMS,
                                    TransferCNN,
                                    architecture,
                                    cut,
                                    cut_points,
                                    freeze,
                                    model_for,
                                    new_head,
                                    output_size,
                                    replace_head,
                                    unfreeze,
)
from minitl.transfer.recipes import (
                                    METHODS,
                                    REGULARIZERS,
                                    Result,
                                    cached_features,
                                    check_cache_on_source_task,
                                    fine_tune,
                                    linear_probe,
                                    proxy_train,
                                    run_method,
                                    train_head,
                                    train_scratch,
)
from minitl.transfer.regularizers import L2SP, feature_mse, feature_mse_composed
from minitl.transfer.source import SOURCE_BATCH, SOURCE_LR, SOURCE_STEPS, source_model, source_model_path, train_source

__all__ = ["TransferCNN", "model_for", "freeze", "unfreeze", "new_head", "replace_head", "extract_features",
           "weights_hash", "module_settings", "cache_dir", "train_source", "source_model_path", "source_model",
           "FeatureCache", "architecture", "feature_mse", "feature_mse_composed", "L2SP", "Budget", "Result",
           "train_scratch", "linear_probe", "proxy_train", "fine_tune", "run_method", "METHODS", "REGULARIZERS",
           "NORMS", "cut", "cut_points", "output_size", "train_head", "cached_features", "BUDGETS", "DIGITS_BUDGETS",
           "budgets_for", "check_cache_on_source_task", "SOURCE_STEPS", "SOURCE_LR", "SOURCE_BATCH"]
