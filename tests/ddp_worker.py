"""Run by tests/test_train.py under torchrun (2 processes) and directly (1 process): trains a
tiny model on fixed synthetic data and writes the loss trajectory as JSON."""
import json
import sys

import numpy as np
import torch

from gpt_lab.model import GPT, GPTConfig
from gpt_lab.train import TrainConfig, distributed_info, lm_batches, train

out, batch_size = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
rng = np.random.default_rng(0)
data = np.tile(rng.integers(0, 50, size=200), 20)
model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
batches = lm_batches(data, data, batch_size=batch_size, block_size=16, seed=3)
history = train(model, batches, TrainConfig(max_steps=8, lr=1e-2, warmup_steps=2, eval_interval=0, progress=False))
if distributed_info()[0] == 0:
    with open(out, "w") as f:
        json.dump({"loss": history.train_loss, "world": distributed_info()[1]}, f)
