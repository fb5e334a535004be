"""2,000,000 ratings with one quoted text column, read by read_delimited.

    python quoted_csv.py          # writes big_q.csv here, then reads it
    /usr/bin/time -v python -c "from metarec.data.delimited import read_delimited; \
        read_delimited('big_q.csv', sep=',')"      # peak memory
"""

import time

import numpy as np

from metarec.data.delimited import read_delimited

rng = np.random.default_rng(0)
n = 2_000_000
u, i, r = rng.integers(1, 20000, n), rng.integers(1, 100000, n), rng.integers(1, 6, n)
with open("big_q.csv", "w") as f:
    f.write("user_id,item_id,rating,note\n")
    for a, b, c in zip(u, i, r, strict=True):
        f.write(f'{a},{b},{c},"nice, movie"\n')
t = time.time()
frame = read_delimited("big_q.csv", sep=",")
print(len(frame), round(time.time() - t, 2), "s")
