import time, cProfile, pstats, numpy as np, pandas as pd
import metarec as mr
ds = mr.load_dataset("ml-100k", root="../../../../shared/data")
rec = mr.train(ds, mr.TrainConfig(epochs=1, encoder="tfidf", seed=0))
rng = np.random.default_rng(0)
n = 148_318
words = [f"w{i}" for i in range(3000)]
wz = rng.zipf(1.3, size=(n, 4)) % 3000
new = pd.DataFrame({"item_id": [f"x{i}" for i in range(n)],
                    "title": [" ".join(words[j] for j in row) + f" {i}" for i, row in enumerate(wz)],
                    "year": rng.integers(1950, 2025, size=n)})
d = rec.model.tower.item_vectors.shape[1]
rec.add_items(new, vectors=rng.normal(size=(n, d)).astype(np.float32))
rec.save("run150")
t = time.perf_counter(); mr.Recommender.load("run150"); print("load %.2f s" % (time.perf_counter() - t))
cProfile.run('mr.Recommender.load("run150")', "load.out")
pstats.Stats("load.out").sort_stats("cumtime").print_stats(25)
