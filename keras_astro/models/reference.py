"""The reference PyTorch implementation of AstroTransformer, in plain eager PyTorch.

It defines the checkpoint layout that `AstroTransformer.from_torch_checkpoint` reads and
is the yardstick of the parity tests and the benchmark. Importing it needs torch;
`import keras_astro` never imports this module.
"""

import torch
from torch import nn

# The reference design, stated here rather than taken from the Keras model it checks.
STEM_FILTERS = 32


class ReferenceStageBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.d_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.e_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, x):
        y = torch.relu(self.bn1(self.d_conv(x)))
        y = self.bn2(self.e_conv(y))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


class ReferenceRelativeAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.proj_qkv = nn.Linear(channels, 3 * channels)
        self.depthwise_conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x):
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.proj_qkv(tokens).chunk(3, dim=-1)
        r = self.depthwise_conv(x).flatten(2).transpose(1, 2)
        logits = q @ k.transpose(1, 2) + q @ r.transpose(1, 2)
        out = logits.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(batch, channels, height, width)


def _stage(in_channels, out_channels, depth):
    blocks = [ReferenceStageBlock(in_channels, out_channels)]
    blocks += [ReferenceStageBlock(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ReferenceAstroTransformer(nn.Module):
    """NCHW input, normalised pixels; returns logits."""

    def __init__(self, expansion=2, stage_depths=(2, 2, 2), num_classes=10):
        super().__init__()
        c1, c2, c3 = (STEM_FILTERS * expansion**i for i in (1, 2, 3))
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_FILTERS, 3, padding=1, bias=False),
            nn.BatchNorm2d(STEM_FILTERS),
            nn.ReLU(),
            nn.Conv2d(STEM_FILTERS, STEM_FILTERS, 3, padding=1, bias=False),
            nn.BatchNorm2d(STEM_FILTERS),
            nn.ReLU(),
        )
        self.s1 = _stage(STEM_FILTERS, c1, stage_depths[0])
        self.s2 = _stage(c1, c2, stage_depths[1])
        self.s3 = _stage(c2, c3, stage_depths[2])
        self.adjust_s0_to_s1 = nn.Conv2d(STEM_FILTERS, c1, 1, bias=False)
        self.adjust_s1_to_s2 = nn.Conv2d(c1, c2, 1, bias=False)
        self.relative_attention = ReferenceRelativeAttention(c3)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x):
        s0 = self.stem(x)
        s1 = self.s1(s0) + self.adjust_s0_to_s1(s0)
        s2 = self.s2(s1) + self.adjust_s1_to_s2(s1)
        s3 = self.s3(s2)
        features = self.relative_attention(s3)
        return self.fc(features.mean(dim=(2, 3)))


def train_reference(
    images, labels, *, num_classes, epochs, batch_size=64, learning_rate=2e-3,
    label_smoothing=0.1, seed=0, expansion=2, stage_depths=(1, 1, 1),
):
    """The plain PyTorch loop a user writes in ten minutes, the yardstick of the recipe.

    AdamW (PyTorch's defaults, weight decay 0.01) under `OneCycleLR` (peak
    `learning_rate`, 30% warmup, cosine anneal, momentum cycling), random horizontal
    flips, cross-entropy with label smoothing, shuffled batches; no validation, no
    checkpoint: the last epoch's model, in eval mode. `images` are normalised NHWC
    float arrays with 3 channels (the reference stem), `labels` int class ids.
    """
    torch.manual_seed(seed)
    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(labels, dtype=torch.long)
    model = ReferenceAstroTransformer(expansion, stage_depths, num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    steps_per_epoch = -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, learning_rate, total_steps=epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(batch_size):
            flip = torch.rand(len(batch)) < 0.5
            inputs = torch.where(flip[:, None, None, None], x[batch].flip(3), x[batch])
            loss = loss_fn(model(inputs), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def predict_reference(model, images, batch_size=256):
    """Class ids `model` predicts for normalised NHWC `images`."""
    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2)
    return torch.cat([model(batch).argmax(-1) for batch in x.split(batch_size)]).numpy()
