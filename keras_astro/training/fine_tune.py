"""Training a model started from a trained one (`keras_astro.models.fine_tune`).

Two ways to spare the backbone's features while the new head learns, as in Keras'
transfer-learning guide: freeze it for the first epochs (`set_backbone_trainable`,
which `resumable.fit(freeze_epochs=...)` applies), and give it a fraction of the head's
learning rate afterwards (`BackboneAdamW`, which `compile_for_training` builds for a
`backbone_lr_factor` other than 1).
"""

import keras
from keras import ops

from keras_astro.models.fine_tune import HEAD


@keras.saving.register_keras_serializable(package="keras_astro")
class BackboneAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate, and so its decoupled weight decay, is multiplied by
    `backbone_lr_factor` for every variable outside the `head` layers.

    Keras has one learning rate per optimizer; the factor is applied per variable in
    `update_step`, so one optimizer, one schedule and one checkpointed state serve
    both parts of the model.

    Args:
        backbone_lr_factor: float in [0, 1], e.g. 0.1.
        head: names of the layers that keep the full rate (default: the classifier).
        **kwargs: `keras.optimizers.AdamW`'s.
    """

    def __init__(self, backbone_lr_factor=1.0, head=(HEAD,), **kwargs):
        super().__init__(**kwargs)
        self.backbone_lr_factor = float(backbone_lr_factor)
        self.head = tuple(head)

    def lr_factor(self, variable):
        """1 for a variable of a head layer, `backbone_lr_factor` for any other."""
        in_head = any(part in self.head for part in variable.path.split("/"))
        return 1.0 if in_head else self.backbone_lr_factor

    def build(self, var_list):
        super().build(var_list)
        # By index: update_step may see the backend's variable, which has no path.
        self._lr_factors = [self.lr_factor(variable) for variable in var_list]

    def _apply_weight_decay(self, variables):
        # Decayed in update_step instead, with the variable's own rate.
        pass

    def update_step(self, gradient, variable, learning_rate):
        factor = self._lr_factors[self._get_variable_index(variable)]
        learning_rate = ops.cast(learning_rate, variable.dtype) * factor
        if self.weight_decay and self._use_weight_decay(variable):
            decay = ops.cast(self.weight_decay, variable.dtype) * learning_rate
            self.assign(variable, variable - variable * decay)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone_lr_factor": self.backbone_lr_factor,
            "head": list(self.head),
        }


def backbone_layers(model):
    """Every layer of `model` but its inputs and the classifier."""
    return [
        layer
        for layer in model.layers
        if layer.name != HEAD and not isinstance(layer, keras.layers.InputLayer)
    ]


def set_backbone_trainable(model, trainable, new_optimizer=False):
    """Freezes (`False`) or unfreezes the backbone, and recompiles a compiled model.

    A frozen BatchNormalization runs in inference mode, keeping the source's statistics.
    Keras needs the recompile for the change to reach the training step. With
    `new_optimizer`, the model gets a new optimizer of the same settings, without state:
    the optimizer of a frozen phase holds the head's variables only (and JAX needs the
    optimizer built for exactly the trainable variables), as in Keras' transfer-learning
    guide, which recompiles after unfreezing.
    """
    for layer in backbone_layers(model):
        layer.trainable = trainable
    if model.compiled:
        config = dict(model._compile_config.config)
        if new_optimizer:
            config["optimizer"] = _fresh(model.optimizer)
        model.compile(**config)


def _fresh(optimizer):
    """A new optimizer of `optimizer`'s settings; its config leaves out the weight-decay
    exclusions (`exclude_from_weight_decay`), which are copied."""
    fresh = optimizer.__class__.from_config(optimizer.get_config())
    for name in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern"):
        if hasattr(optimizer, name):
            setattr(fresh, name, getattr(optimizer, name))
    return fresh
