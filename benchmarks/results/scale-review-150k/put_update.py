"""The write-lock work of a PUT /v1/items that updates one item of a 150,000-item run
(serving.py's upsert_items: apply_items, then a fold-in of the feedback, then the search
data rebuilt), timed on a saved run (load150.py's). Usage: put_update.py RUN LABEL"""
import sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np, pandas as pd
from pathlib import Path
from metarec.recommender import Recommender
from metarec.service.items import apply_items
from metarec.service.serving import Served
rec = Recommender.load(sys.argv[1])
served = Served(rec, Path("."), "x", 0, Path("."))
served.refresh()
fb = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x1", "1", "x2"], "rating": [5.0, 3.0, 2.0]})
rng = np.random.default_rng(0)
d = rec.model.tower.item_vectors.shape[1]
for n in range(3):
    frame = pd.DataFrame({"item_id": ["x5"], "title": [f"Again {n}"], "text": [f"Again {n} (2002). Drama."]})
    t = time.perf_counter()
    apply_items(rec, frame, rng.normal(size=(1, d)).astype(np.float32)); t1 = time.perf_counter() - t
    rec.fold_in_items(fb, keep_unrated=True); t2 = time.perf_counter() - t
    served.refresh(); t3 = time.perf_counter() - t
    print(f"{sys.argv[2]} items {rec.n_items}: apply_items {t1:.3f}, +fold-in {t2:.3f}, +search data {t3:.3f} s")
