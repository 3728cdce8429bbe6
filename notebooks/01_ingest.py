# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Ingest STATS19 into the lake
#
# The Department for Transport publishes every reported personal-injury road collision in Great
# Britain as three linked tables: collisions, the vehicles involved, and the casualties. This
# notebook brings the chosen years into the lake, one partition per year:
#
# 1. find each year's files across DfT's naming eras and download them (or read a mirror);
# 2. keep the published bytes under `raw/stats19/<table>/year=YYYY/`;
# 3. read every column era into one schema, validate codes and links between the tables;
# 4. build the curated table, one row per collision with the features known when it happened,
#    and commit it atomically under `curated/collisions/year=YYYY/` with a manifest.
#
# A year whose files have not changed since its partition was written is left as it is, so running
# this twice rewrites nothing. `force = True` rebuilds every year.

# %% tags=["parameters"]
years = None  # e.g. "2014-2018" or "2019,2021"; None: STATS19_YEARS
base_url = None  # DfT, or a mirror laid out like it (http, https, file://); None: STATS19_BASE_URL
force = False  # True: rebuild partitions even when the files are unchanged

# %%
import logging

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from lib.config import DATA_DIR, configure, parse_years
from lib.data import codes
from lib.data.curated import CURATED
from lib.data.ingest import ingest_year
from lib.data.lake import open_lake
from lib.data.validate import findings_frame

logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
settings = configure()
year_list = parse_years(str(years), "years") if years else settings.stats19_years
base_url = base_url or settings.stats19_base_url
lake = open_lake(settings)
display(Markdown(f"Ingesting **{', '.join(map(str, year_list))}** from `{base_url}` into `{lake.uri}`."))

# %% [markdown]
# ## Ingest, year by year
# Each year is fetched, validated and committed on its own: a failure in one year stops the run
# before anything of that year is written, and leaves the years already committed as they are.

# %%
results = [ingest_year(lake, base_url, year, DATA_DIR / "downloads", force=force) for year in year_list]
summary = pd.DataFrame({
    "year": [r.year for r in results],
    "status": [r.status for r in results],
    "collisions": [r.rows for r in results],
    "raw files written": [len(r.raw_written) for r in results],
    "seconds": [round(r.seconds, 1) for r in results],
}).set_index("year")
summary

# %% [markdown]
# ## Collisions and severity by year
# Severity is the worst casualty's: fatal (death within 30 days), serious, or slight. The share of
# serious collisions rises over the years partly because more police forces record injuries with
# the injury-based CRASH system, not only because roads got more dangerous; a model trained on
# older years will see that drift.

# %%
counts = pd.DataFrame({r.year: r.severity_counts for r in results}).T.rename(columns=codes.LABELS["collision_severity"])
shares = counts.div(counts.sum(axis=1), axis=0).mul(100).round(2)
display(pd.concat({"collisions": counts, "share %": shares}, axis=1))

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
counts.sum(axis=1).plot.bar(ax=left, color="#4c72b0", title="Collisions per year")
shares[["Fatal", "Serious"]].plot(ax=right, marker="o", title="Fatal and serious share (%)")
for axis in (left, right):
    axis.set_xlabel("")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Missing values in the curated table
# Codes meaning "missing or out of range" (-1) and "unknown" (such as 9 or 99) are stored as
# missing, so the model can treat them as their own category instead of as a number.

# %%
curated = lake.read_dataset(CURATED, year_list)
missing = curated.isna().groupby(curated["collision_year"]).mean().mul(100).round(1).T
missing = missing.loc[missing.max(axis=1) > 0]
missing if not missing.empty else Markdown("No missing values in any curated column.")

# %% [markdown]
# ## Validation findings
# Problems that make a year untrustworthy (a missing column, a truncated file, an unknown severity
# code, a vehicle without its collision) stop the run with the file, line, column and value. The
# ones below were repaired as the `action` column says and counted, so that you can judge them.

# %%
findings = findings_frame([f for r in results for f in r.findings])
findings if not findings.empty else Markdown("No findings: every file passed every check.")
