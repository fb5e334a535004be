import numpy as np, pandas as pd
rng = np.random.default_rng(0)
NI, NU, NR = 150_000, 20_000, 1_500_000
words = [f"w{i}" for i in range(3000)]
genres = ["Action","Comedy","Drama","Horror","Romance","Sci-Fi","Thriller","Animation","Documentary","Fantasy","Mystery","War","Western","Musical"]
wz = rng.zipf(1.3, size=(NI, 4)) % 3000
titles = [" ".join(words[j] for j in row) + f" {i}" for i, row in enumerate(wz)]
gsel = rng.integers(0, len(genres), size=(NI, 2))
g = ["|".join(sorted({genres[a], genres[b]})) for a, b in gsel]
years = rng.integers(1950, 2025, size=NI)
pd.DataFrame({"item_id": [f"i{i}" for i in range(NI)], "title": titles, "year": years, "genres": g}).to_csv("items.csv", index=False)
# users: 13..300 ratings, popularity zipf-ish
w = 1.0/np.arange(1,NI+1)**0.8; w/=w.sum(); pop = rng.permutation(NI)[rng.choice(NI, size=NR*2, p=w)]
per = rng.integers(13, 140, size=NU)
per = (per * NR / per.sum()).astype(int).clip(13)
uid = np.repeat(np.arange(NU), per)
items = pop[:len(uid)]
ratings = rng.integers(1, 6, size=len(uid))
ts = rng.integers(9e8, 1.6e9, size=len(uid))
df = pd.DataFrame({"user_id": [f"u{u}" for u in uid], "item_id": [f"i{i}" for i in items], "rating": ratings, "timestamp": ts})
df = df.drop_duplicates(["user_id","item_id"])
df.to_csv("ratings.csv", index=False)
print(len(df), df.user_id.nunique(), df.item_id.nunique())
