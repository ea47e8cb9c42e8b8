"""Checks and defaults of the constructor arguments the layers share."""

import keras


def standardize_data_format(data_format):
    """`None` -> Keras' global image data format; anything else must be a known one."""
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None. "
            f"Received: {data_format!r}"
        )
    return data_format


def channel_axis(data_format):
    return -1 if data_format == "channels_last" else 1


def with_channels(shape, data_format, channels):
    """`shape` with its channel dimension replaced by `channels`."""
    shape = list(shape)
    shape[channel_axis(data_format)] = channels
    return tuple(shape)


def check_remat(remat):
    if not isinstance(remat, bool):
        raise ValueError(f"`remat` must be True or False. Received: {remat!r}")
    return remat
