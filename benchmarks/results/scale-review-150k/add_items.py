"""Load a run of the 150,000-item catalogue (gen.py, then
`metarec train --interactions ratings.csv --items items.csv --out run1 --holdout none
--set encoder=tfidf --set epochs=1`), index it again, and add three items one at a time."""

import sys
import time

import pandas as pd

import metarec as mr

t = time.time()
rec = mr.Recommender.load(sys.argv[1] if len(sys.argv) > 1 else "run1")
print("load", round(time.time() - t, 2))
t = time.time()
rec._reindex()
print("reindex", round(time.time() - t, 2))
for k in range(3):  # the first builds the encoder (imports scikit-learn)
    t = time.time()
    rec.add_items(pd.DataFrame({"item_id": [f"zz{k}"], "title": [f"Brand New Thing {k}"],
                                "year": [2020]}))  # fmt: skip
    print("add", round(time.time() - t, 2))
