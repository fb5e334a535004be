import sys, numpy as np, pandas as pd, torch, tempfile, os
from pathlib import Path
from metarec.config import ModelConfig, TrainConfig
from metarec.data.tasks import UserRatings
from metarec.meta.learner import MetaLearner
from metarec.meta.trainer import TaskSource, Trainer
from metarec.models.preference import PreferenceNet
N, D = 150_000, 384
rng = np.random.default_rng(0)
vectors = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(N, D)), dtype=torch.float32), dim=-1)
rows = [(f"u{u}", str(i), float(rng.integers(1, 6))) for u in range(60) for i in rng.choice(N, 15, replace=False)]
ur = UserRatings.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]), {str(i): i for i in range(N)})
src = TaskSource(ur, np.zeros((len(ur), 0), dtype=np.int64))
mc = ModelConfig()
cfg = TrainConfig(epochs=2, patience=100, meta_batch_size=16, inner_steps=1, seed=5, device="cpu", model=mc)
torch.manual_seed(0)
net = PreferenceNet(vectors, mc, [], offset=3.0)
net.tower.id_known[:] = 1
t = Trainer(MetaLearner(net, cfg), cfg, negative_pool=np.arange(N), progress=False)
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
t.fit(src, src, checkpoint_dir=out)
print(sys.argv[2], "checkpoint MB:", round(sum(p.stat().st_size for p in out.iterdir()) / 1e6, 1), "use_item_ids", mc.use_item_ids)
